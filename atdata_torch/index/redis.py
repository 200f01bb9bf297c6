"""The shared index backend: a Redis server (``redis://host:port/db``), in the original atdata's key layout.

Keys the original reads and writes (and this backend too, field for field):

- hash ``LocalDatasetEntry:{cid}``: ``name``, ``schema_ref``, ``data_urls`` (msgpack), ``cid``, ``metadata``
  (msgpack, optional), ``legacy_uuid`` (optional); this backend adds ``created_at``.
- string ``LocalSchema:{name}@{version}``: the schema JSON (a legacy ``module.Class`` name reads as ``Class``).
- hash ``Label:{name}@{version}``: ``cid``, ``name``, ``version``, ``description`` (optional); plus ``created_at``.
- string ``LocalLens:{name}@{version}``: the lens JSON.

Secondary indexes, under ``AtdataTorch:`` (which the original never scans), make lookups by name one round
trip instead of a scan: ``AtdataTorch:EntriesByName:{name}`` (hash cid -> created_at),
``AtdataTorch:LabelsByName:{name}`` (hash version -> created_at), ``AtdataTorch:SchemaVersions:{name}``,
``AtdataTorch:LensVersions:{name}`` (sets) and ``AtdataTorch:Names`` (set). They are built from a full scan the
first time this backend opens a database, kept current by every write (in the same ``MULTI``/``EXEC``
transaction), and a lookup that misses falls back to a pattern scan, so records the original adds later are
still found; :meth:`RedisStore.reindex` rebuilds them.

Needs the ``redis`` extra (``pip install 'atdata-torch[redis]'``), imported when a store is created.

Example:
    >>> # store = RedisStore("redis://127.0.0.1:6379/0")
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack

from ..errors import IndexStoreError, MissingDependencyError
from ._records import IndexEntry, Label, now

__all__ = ["RedisStore"]

ENTRY = "LocalDatasetEntry:"
SCHEMA = "LocalSchema:"
LABEL = "Label:"
LENS = "LocalLens:"
X = "AtdataTorch:"
X_NAMES = X + "Names"
X_META = X + "Meta"
_LAYOUT = b"1"
_BATCH = 500


def _x_entries(name: str) -> str:
    return f"{X}EntriesByName:{name}"


def _x_labels(name: str) -> str:
    return f"{X}LabelsByName:{name}"


def _x_versions(kind: str, name: str) -> str:
    return f"{X}{kind}Versions:{name}"


def _s(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH pattern characters."""
    return re.sub(r"([\\*?\[\]^-])", r"\\\1", text)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise MissingDependencyError.for_extra("redis", "redis", "The Redis index backend") from exc
    return redis


class RedisStore:
    """An :class:`~atdata_torch.index.IndexStore` on a Redis server.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` or ``unix:///path.sock``; or an existing
            ``redis.Redis`` client (it must not decode responses).
        **client_options: Passed to ``redis.Redis.from_url`` (``socket_timeout=``, ...).

    Raises:
        MissingDependencyError: the ``redis`` package is not installed.
        IndexStoreError: the server cannot be reached.
    """

    def __init__(self, url: str | Any, **client_options: Any) -> None:
        redis = _import_redis()
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._watch_error: type[BaseException] = redis.WatchError
        if isinstance(url, str):
            self.location = url
            self._r: Any = redis.Redis.from_url(url, decode_responses=False, **client_options)
        else:
            self._r = url
            kw = getattr(getattr(url, "connection_pool", None), "connection_kwargs", {})
            self.location = f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
        try:
            if self._r.hget(X_META, "layout") != _LAYOUT:
                self.reindex()
        except self._errors as exc:
            raise IndexStoreError(f"cannot use the Redis index at {self.location}: {exc}") from exc

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client."""
        return self._r

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._errors as exc:
            raise IndexStoreError(f"Redis index at {self.location}: {exc}") from exc

    def _scan(self, pattern: str) -> list[bytes]:
        return list(self._call(lambda: list(self._r.scan_iter(match=pattern, count=1000))))

    def _hgetall_many(self, keys: list[bytes] | list[str]) -> list[dict[bytes, bytes]]:
        out: list[dict[bytes, bytes]] = []
        for i in range(0, len(keys), _BATCH):
            pipe = self._r.pipeline(transaction=False)
            for k in keys[i : i + _BATCH]:
                pipe.hgetall(k)
            out.extend(self._call(pipe.execute))
        return out

    def _transaction(self, watch: list[str], body: Callable[[Any], None]) -> None:
        """Run ``body(pipe)`` in MULTI/EXEC under WATCH ``watch``; retried when a watched key changes."""

        def run() -> None:
            with self._r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        if watch:
                            pipe.watch(*watch)
                        body(pipe)
                        pipe.execute()
                        return
                    except self._watch_error:
                        continue

        self._call(run)

    # ------------------------------------------------------------------------------------------ reindex
    def reindex(self) -> None:
        """Rebuild the ``AtdataTorch:`` secondary indexes from a scan of the original's keys.

        Needed only after another program (the original atdata) wrote to the same database; lookups that miss
        fall back to a scan anyway.
        """
        entry_keys = self._scan(ENTRY + "*")
        label_keys = self._scan(LABEL + "*")
        pipe = self._r.pipeline(transaction=False)
        for key, raw in zip(entry_keys, self._hgetall_many(entry_keys), strict=True):
            if b"name" in raw:
                cid = _s(key)[len(ENTRY) :]
                pipe.hset(_x_entries(_s(raw[b"name"])), cid, raw.get(b"created_at", b""))
                pipe.sadd(X_NAMES, raw[b"name"])
        for raw in self._hgetall_many(label_keys):
            if b"name" in raw and b"cid" in raw:
                pipe.hset(_x_labels(_s(raw[b"name"])), raw.get(b"version", b""), raw.get(b"created_at", b""))
                pipe.sadd(X_NAMES, raw[b"name"])
        for kind, prefix in (("Schema", SCHEMA), ("Lens", LENS)):
            for key in self._scan(prefix + "*"):
                parsed = _split_key(_s(key)[len(prefix) :], legacy=kind == "Schema")
                if parsed is not None:
                    pipe.sadd(_x_versions(kind, parsed[0]), parsed[1])
        pipe.hset(X_META, "layout", _LAYOUT)
        self._call(pipe.execute)

    # ------------------------------------------------------------------------------------------ entries
    def put_entry(self, entry: IndexEntry, label: Label | None = None) -> None:
        """Upsert ``entry`` (and ``label``) in one MULTI/EXEC transaction."""
        created = entry.created_at or now()
        key = ENTRY + entry.cid
        data: dict[str, Any] = {
            "name": entry.name,
            "schema_ref": entry.schema_ref,
            "data_urls": msgpack.packb(list(entry.data_urls)),
            "cid": entry.cid,
            "created_at": created,
        }
        if entry.metadata is not None:
            data["metadata"] = msgpack.packb(entry.metadata)
        if entry.legacy_uuid is not None:
            data["legacy_uuid"] = entry.legacy_uuid

        def body(pipe: Any) -> None:
            old = pipe.hget(key, "name")
            pipe.multi()
            if old is not None and _s(old) != entry.name:
                pipe.hdel(_x_entries(_s(old)), entry.cid)
            pipe.delete(key)
            pipe.hset(key, mapping=data)
            pipe.hset(_x_entries(entry.name), entry.cid, created)
            pipe.sadd(X_NAMES, entry.name)
            if label is not None:
                self._queue_label(pipe, label)

        self._transaction([key], body)
        entry.created_at = created

    def get_entry(self, cid: str) -> IndexEntry | None:
        """The entry with this CID, or ``None``."""
        raw = self._call(lambda: self._r.hgetall(ENTRY + cid))
        return _entry(cid, raw) if raw else None

    def entries_named(self, name: str) -> list[IndexEntry]:
        """Entries named ``name``, newest first (one HGETALL of the name's index, one pipelined fetch)."""
        cids = [_s(c) for c in self._call(lambda: self._r.hkeys(_x_entries(name)))]
        if not cids:
            cids = self._backfill_entries(name)
        out = [
            _entry(c, raw)
            for c, raw in zip(cids, self._hgetall_many([ENTRY + c for c in cids]), strict=True)
            if raw and _s(raw.get(b"name", b"")) == name
        ]
        out.sort(key=lambda e: e.created_at or "", reverse=True)
        return out

    def _backfill_entries(self, name: str) -> list[str]:
        keys = self._scan(ENTRY + "*")
        found: dict[str, bytes] = {}
        for i in range(0, len(keys), _BATCH):
            chunk = keys[i : i + _BATCH]
            pipe = self._r.pipeline(transaction=False)
            for k in chunk:
                pipe.hmget(k, "name", "created_at")
            for k, (n, created) in zip(chunk, self._call(pipe.execute), strict=True):
                if n is not None and _s(n) == name:
                    found[_s(k)[len(ENTRY) :]] = created or b""
        if found:
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(_x_entries(name), mapping=found)
            pipe.sadd(X_NAMES, name)
            self._call(pipe.execute)
        return list(found)

    def iter_entries(self) -> Iterator[IndexEntry]:
        """Every entry (one SCAN, pipelined fetches)."""
        keys = self._scan(ENTRY + "*")
        for key, raw in zip(keys, self._hgetall_many(keys), strict=True):
            if raw:
                yield _entry(_s(key)[len(ENTRY) :], raw)

    # ------------------------------------------------------------------------------------------ labels
    @staticmethod
    def _queue_label(pipe: Any, label: Label) -> None:
        label.created_at = now()
        version = label.version or ""
        key = f"{LABEL}{label.name}@{version}"
        data = {"cid": label.cid, "name": label.name, "version": version, "created_at": label.created_at}
        if label.description is not None:
            data["description"] = label.description
        pipe.delete(key)
        pipe.hset(key, mapping=data)
        pipe.hset(_x_labels(label.name), version, label.created_at)
        pipe.sadd(X_NAMES, label.name)

    def put_label(self, label: Label) -> None:
        """Upsert a label by (name, version)."""

        def body(pipe: Any) -> None:
            pipe.multi()
            self._queue_label(pipe, label)

        self._transaction([], body)

    def get_label(self, name: str, version: str | None = None) -> Label | None:
        """The label ``name@version``, or the newest label of ``name``."""
        if version is not None:
            raw = self._call(lambda: self._r.hgetall(f"{LABEL}{name}@{version}"))
            return _label(raw) if raw and b"cid" in raw else None
        labels = self.labels_named(name)
        return labels[0] if labels else None

    def labels_named(self, name: str) -> list[Label]:
        """Labels of ``name``, newest first (labels without ``created_at``, from the original, sort last)."""
        versions = [_s(v) for v in self._call(lambda: self._r.hkeys(_x_labels(name)))]
        keys = [f"{LABEL}{name}@{v}" for v in versions]
        if not keys:
            keys = [_s(k) for k in self._scan(f"{LABEL}{_glob_escape(name)}@*")]
        labels = [_label(raw) for raw in self._hgetall_many(keys) if raw and b"cid" in raw]
        labels = [lb for lb in labels if lb.name == name]
        if labels and not versions:
            pipe = self._r.pipeline(transaction=False)
            for lb in labels:
                pipe.hset(_x_labels(name), lb.version or "", lb.created_at or "")
            pipe.sadd(X_NAMES, name)
            self._call(pipe.execute)
        labels.sort(key=lambda lb: lb.created_at or "", reverse=True)
        return labels

    def iter_labels(self) -> Iterator[Label]:
        """Every label."""
        keys = self._scan(LABEL + "*")
        for raw in self._hgetall_many(keys):
            if raw and b"cid" in raw:
                yield _label(raw)

    def names(self) -> set[str]:
        """Every entry and label name."""
        return {_s(n) for n in self._call(lambda: self._r.smembers(X_NAMES))}

    # ------------------------------------------------------------------------------------------ schemas, lenses
    def _put_record(self, kind: str, prefix: str, name: str, version: str, text: str, replace: bool) -> bool:
        pipe = self._r.pipeline(transaction=True)
        pipe.set(f"{prefix}{name}@{version}", text, nx=not replace)
        pipe.sadd(_x_versions(kind, name), version)
        stored, _ = self._call(pipe.execute)
        return bool(stored)

    def _get_record(self, prefix: str, name: str, version: str, legacy: bool) -> str | None:
        value = self._call(lambda: self._r.get(f"{prefix}{name}@{version}"))
        if value is None and legacy:  # "LocalSchema:module.Class@1.0.0" from old atdata versions
            keys = self._scan(f"{prefix}*.{_glob_escape(name)}@{_glob_escape(version)}")
            value = self._call(lambda: self._r.get(keys[0])) if keys else None
        return _s(value) if value is not None else None

    def _versions(self, kind: str, prefix: str, name: str, legacy: bool) -> list[str]:
        versions = {_s(v) for v in self._call(lambda: self._r.smembers(_x_versions(kind, name)))}
        if not versions:
            patterns = [f"{prefix}{_glob_escape(name)}@*"]
            if legacy:
                patterns.append(f"{prefix}*.{_glob_escape(name)}@*")
            for pattern in patterns:
                for key in self._scan(pattern):
                    parsed = _split_key(_s(key)[len(prefix) :], legacy=legacy)
                    if parsed is not None and parsed[0] == name:
                        versions.add(parsed[1])
            if versions:
                self._call(lambda: self._r.sadd(_x_versions(kind, name), *versions))
        return sorted(versions)

    def _iter_records(self, prefix: str, legacy: bool) -> Iterator[tuple[str, str, str]]:
        keys = self._scan(prefix + "*")
        for i in range(0, len(keys), _BATCH):
            chunk = keys[i : i + _BATCH]
            values = self._call(functools.partial(self._r.mget, chunk))
            for key, value in zip(chunk, values, strict=True):
                parsed = _split_key(_s(key)[len(prefix) :], legacy=legacy)
                if parsed is not None and value is not None:
                    yield parsed[0], parsed[1], _s(value)

    def put_schema(self, name: str, version: str, schema_json: str, *, replace: bool = True) -> bool:
        """Store a schema (``replace=False``: ``SET NX``)."""
        return self._put_record("Schema", SCHEMA, name, version, schema_json, replace)

    def get_schema(self, name: str, version: str) -> str | None:
        """A schema's JSON, or ``None``."""
        return self._get_record(SCHEMA, name, version, legacy=True)

    def schema_versions(self, name: str) -> list[str]:
        """Versions stored for ``name``."""
        return self._versions("Schema", SCHEMA, name, legacy=True)

    def iter_schemas(self) -> Iterator[tuple[str, str, str]]:
        """Every ``(name, version, schema_json)``."""
        return self._iter_records(SCHEMA, legacy=True)

    def put_lens(self, name: str, version: str, lens_json: str, *, replace: bool = True) -> bool:
        """Store a lens record (``replace=False``: ``SET NX``)."""
        return self._put_record("Lens", LENS, name, version, lens_json, replace)

    def get_lens(self, name: str, version: str) -> str | None:
        """A lens record's JSON, or ``None``."""
        return self._get_record(LENS, name, version, legacy=False)

    def lens_versions(self, name: str) -> list[str]:
        """Versions stored for lens ``name``."""
        return self._versions("Lens", LENS, name, legacy=False)

    def iter_lenses(self) -> Iterator[tuple[str, str, str]]:
        """Every ``(name, version, lens_json)``."""
        return self._iter_records(LENS, legacy=False)

    # ------------------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection pool."""
        self._call(self._r.close)

    def __repr__(self) -> str:
        return f"RedisStore({self.location!r})"


def _split_key(rest: str, *, legacy: bool) -> tuple[str, str] | None:
    if "@" not in rest:
        return None
    name, version = rest.rsplit("@", 1)
    if legacy and "." in name:
        name = name.rsplit(".", 1)[1]
    return name, version


def _decode_all(raw: dict[bytes, bytes], fields: Iterable[str]) -> dict[str, str]:
    return {f: _s(raw[f.encode()]) for f in fields if f.encode() in raw}


def _entry(cid: str, raw: dict[bytes, bytes]) -> IndexEntry:
    try:
        data_urls = [str(u) for u in msgpack.unpackb(raw[b"data_urls"], raw=False)]
        metadata = msgpack.unpackb(raw[b"metadata"], raw=False, strict_map_key=False) if b"metadata" in raw else None
        text = _decode_all(raw, ("name", "schema_ref", "cid", "legacy_uuid", "created_at"))
        return IndexEntry(
            name=text["name"],
            schema_ref=text["schema_ref"],
            data_urls=data_urls,
            metadata=metadata if isinstance(metadata, dict) else None,
            cid=text.get("cid") or cid,
            created_at=text.get("created_at") or None,
            legacy_uuid=text.get("legacy_uuid") or None,
        )
    except (KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise IndexStoreError(f"the Redis hash {ENTRY}{cid} is not a dataset entry: {exc!r}") from exc


def _label(raw: dict[bytes, bytes]) -> Label:
    text = _decode_all(raw, ("name", "cid", "version", "description", "created_at"))
    return Label(
        name=text.get("name", ""),
        cid=text["cid"],
        version=text.get("version") or None,
        description=text.get("description"),
        created_at=text.get("created_at") or None,
    )
