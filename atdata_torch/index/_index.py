"""``Index``: name, version, search and load datasets; publish schemas; store lenses (SQLite or Redis).

Example:
    >>> import os, tempfile, numpy as np
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Digit:
    ...     image: atd.NDArray
    ...     label: int
    >>> d = tempfile.mkdtemp()
    >>> index = atd.Index(os.path.join(d, "index.db"))            # or atd.Index("redis://127.0.0.1:6379/0")
    >>> entry = index.write_samples([Digit(np.zeros((2, 2), np.uint8), i) for i in range(4)], name="digits",
    ...                             maxcount=2, tags=["vision"], progress=False)
    >>> entry.cid.startswith("bafyrei"), len(entry.data_urls)
    (True, 2)
    >>> _ = index.label("digits", entry.cid, version="2.0.0")
    >>> index.get_dataset("digits@2.0.0").cid == entry.cid
    True
    >>> [e.name for e in index.search("dig", tags=["vision"])]
    ['digits']
    >>> ds = atd.load_dataset("@local/digits", split="train", index=index)
    >>> len(ds), type(ds.head(1)[0]).__name__
    (4, 'Digit')
    >>> index.close()
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._splits import DatasetDict, select_split
from ..dataset import Dataset
from ..errors import IndexStoreError, SchemaError
from ..records import parse_schema_ref
from ..schema import DictSample, PackableSample
from ._catalog import Catalog, _schema_name_of
from ._cid import entry_cid
from ._compat import atmosphere_for, copy_through_store, open_location, store_root, write_through_store
from ._locations import abs_url as _abs_url
from ._locations import check_name, default_data_dir, default_index_location, parse_dataset_ref
from ._locations import dataset_urls as _dataset_urls
from ._locations import split_groups as _split_groups
from ._records import IndexEntry, IndexNotFoundError, IndexStore, Label
from ._write import remove_shards, sha256_of, sink_for, write_splits
from .sqlite import SqliteStore

__all__ = ["Index"]

log = logging.getLogger("atdata_torch")

_REMOTE = re.compile(r"^(redis|rediss|unix)://")
_SPLIT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class Index(Catalog):
    """A dataset index: entries (name, schema, shards; id = CID), version labels, schemas and lenses.

    Args:
        location: A SQLite file path (the default backend; ``sqlite:///path`` also works), a ``redis://`` /
            ``rediss://`` / ``unix://`` URL (the ``redis`` extra), or an :class:`IndexStore`. ``None`` reads
            ``$ATDATA_TORCH_INDEX``, else ``index.db`` in the user data directory.
        data_dir: Where :meth:`write_samples` writes shards (``$ATDATA_TORCH_DATA_DIR``; else ``data/`` next to
            a SQLite index).
        provider, path, redis, data_store, atmosphere, **redis_kwargs: The original's spelling
            (``Index(provider="sqlite", path=...)``, ``Index(redis=client)``, ``Index("redis", host=...)``,
            ``data_store=LocalDiskStore(root)``); see ``docs/migrating-from-atdata.md``.

    The stores use the original atdata's tables and keys, so both libraries read each other's index.

    Raises:
        IndexStoreError: the store cannot be opened.
        MissingDependencyError: a Redis URL without the ``redis`` package.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | IndexStore | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        provider: Any = None,
        path: str | os.PathLike[str] | None = None,
        redis: Any = None,
        data_store: Any = None,
        atmosphere: Any = None,
        **redis_kwargs: Any,
    ) -> None:
        data_store = data_store if data_store is not None else getattr(location, "data_store", None)  # a Repository
        location = open_location(location, provider=provider, path=path, redis=redis, kwargs=redis_kwargs)
        self.data_store, self.atmosphere = data_store, atmosphere
        data_dir = data_dir if data_dir is not None else store_root(data_store)
        if location is not None and not isinstance(location, (str, os.PathLike)):
            self.store: IndexStore = location
        else:
            loc = os.fspath(location) if location is not None else default_index_location()
            if _REMOTE.match(loc):
                from .redis import RedisStore

                self.store = RedisStore(loc)
            else:
                if loc.startswith("sqlite://"):
                    loc = loc[len("sqlite://") :] or default_index_location()
                self.store = SqliteStore(loc)
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(self.store)

    def close(self) -> None:
        """Close the store's connections."""
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({self.location!r})"

    # ================================================================================================ datasets
    def write_samples(
        self,
        samples: Iterable[Any] | Mapping[str, Iterable[Any]],
        *,
        name: str,
        version: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        schema_ref: str | None = None,
        maxcount: int | None = 10_000,
        maxsize: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        progress: bool | None = None,
        overwrite: bool = False,
        data_store: Any = None,
        pack: int | None = None,
        **_original: Any,
    ) -> IndexEntry:
        """Write samples as shards into the data store and index them (schema published when new).

        Shards go to ``<data_dir>/<name>/data--<token>--000000.tar``, ... (the original's layout); with a
        mapping ``{"train": samples, "test": samples}`` each split gets its own prefix (``train--<token>--...``)
        and ``load_dataset`` finds the splits.

        Args:
            samples: ``@packable`` samples of one type, or ``{split: samples}``.
            name: The dataset name (may contain ``/``, not ``@``).
            version: Label the entry ``name@version`` (else an unversioned label ``name``).
            description: Stored in ``metadata["description"]`` and on the label.
            tags: Stored in ``metadata["tags"]`` (used by :meth:`search`).
            license: Stored in ``metadata["license"]``.
            metadata: Extra metadata (msgpack-serializable).
            schema_ref: Use this schema instead of the samples' class's (published or reused automatically).
            maxcount: Samples per shard.
            maxsize: Bytes per shard.
            data_dir: Override the index's data directory.
            progress: tqdm bar (``None``: only on a terminal).
            data_store: Write through this store (default: the index's ``data_store``, else ``data_dir``);
                the original's ``manifest=True`` writes per-shard manifests (the ``arrow`` extra) and ``force=`` is
                accepted (no effect for local shards).
            overwrite: Move an existing label ``name@version`` (or, without ``version``, the name) to the new
                entry. Without it, writing into a name or version the index already has is an error (write a
                new ``version=``, or reuse the entry: ``index.get_dataset("name@version")``).
            pack: The compact layout, this many samples per tar member (``atd.ShardWriter``); local shards only.

        Returns:
            The new :class:`IndexEntry` (its ``metadata`` has ``checksums`` and ``size``).

        Raises:
            ValueError: no samples, or a bad name.
            SchemaError: the samples are not ``@packable`` (and no ``schema_ref``), or mix types.
            IndexStoreError: ``name@version`` (or ``name``) is already in the index and ``overwrite`` is false.
        """
        name = check_name(name)
        if not overwrite:
            self._check_free(name, version)
        store = data_store if data_store is not None else self.data_store
        if store is not None and store_root(store) is None:
            if pack is not None:
                raise ValueError(f"pack= writes local shards; {type(store).__name__} writes its own (drop pack=)")
            kw: dict[str, Any] = {"maxcount": maxcount, "maxsize": maxsize, "progress": progress, "version": version}
            kw.update(metadata=metadata, description=description, tags=tags, license=license, schema_ref=schema_ref)
            return write_through_store(self, samples, store, name, **kw)
        data_dir = data_dir if data_dir is not None else store_root(store)
        splits: Mapping[str | None, Iterable[Any]] = (
            {str(k): v for k, v in samples.items()} if isinstance(samples, Mapping) else {None: samples}
        )
        for split in splits:
            if split is not None and not _SPLIT.fullmatch(split):
                raise ValueError(f"invalid split name {split!r}; use letters, digits, '_', '-', '.'")
        target = (Path(data_dir).expanduser() if data_dir is not None else self.data_dir) / name
        written: list[str] = []
        try:
            urls, n_samples, sample_type, tracker = write_splits(
                splits,
                target,
                name,
                written,
                typed=schema_ref is None,
                maxcount=maxcount,
                maxsize=maxsize,
                progress=progress,
                open_sink=sink_for(bool(_original.get("manifest")), pack),
            )
            if n_samples == 0 or sample_type is None:
                raise ValueError(f"write_samples({name!r}) got no samples; nothing was written")
            if schema_ref is None:
                schema_ref = self._ensure_schema(sample_type, tracker.hints)
            meta = self._metadata(metadata, description, tags, license)
            meta["checksums"] = {u: sha256_of(u) for u in urls}
            meta["size"] = {"samples": n_samples, "shards": len(urls), "bytes": sum(os.path.getsize(u) for u in urls)}
            return self._put(name, schema_ref, urls, meta, version, description)
        except BaseException:
            remove_shards(written)  # no half-indexed dataset is left behind in the data store
            raise

    def _check_free(self, name: str, version: str | None) -> None:
        """Raise unless ``name@version`` (``name`` without a version: any label of it) is new to the index."""
        labels = self.store.labels_named(name)
        taken = [lb for lb in labels if version is None or lb.version == version]
        if not taken:
            return
        ref = name if version is None else f"{name}@{version}"
        versions = sorted({lb.version or "(unversioned)" for lb in labels})
        raise IndexStoreError(
            f"write_samples({name!r}): {ref} is already in the index at {self.location} (versions: {versions}, "
            f"entry {taken[0].cid}); pass overwrite=True to point {ref} at the new shards, write a new version=, "
            f"or reuse the existing entry with index.get_dataset({ref!r})"
        )

    def insert_dataset(
        self,
        ds: Dataset[Any] | str | os.PathLike[str] | list[str],
        *,
        name: str,
        version: str | None = None,
        sample_type: type | None = None,
        schema_ref: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        data_store: Any = None,
        **_original: Any,
    ) -> IndexEntry:
        """Index existing shards (no copy): a ``Dataset``, a URL / brace pattern, or a list of them.

        Local paths are stored absolute; a string is stored as given (a brace pattern stays one URL, as the
        original stores ``ds.url``, so both compute the same CID).

        Args:
            ds: The shards.
            name: The dataset name.
            version: Label the entry ``name@version``.
            sample_type: The sample class when ``ds`` is not a typed ``Dataset``.
            schema_ref: The schema (default: the sample class's, published or reused automatically).
            description: See :meth:`write_samples`.
            tags: See :meth:`write_samples`.
            license: See :meth:`write_samples`.
            metadata: See :meth:`write_samples`.
            data_store: Copy a ``Dataset``'s samples through this store (default: the index's ``data_store``) and
                index the copies, with their checksums (the original's behaviour); ``force=``/``copy=`` accepted.

        Raises:
            SchemaError: neither a typed dataset, ``sample_type`` nor ``schema_ref`` tells the schema.
        """
        name = check_name(name)
        store = data_store if data_store is not None else self.data_store
        if isinstance(ds, Dataset) and store is not None:
            sample_type = sample_type or ds.sample_type
            ds, checks = copy_through_store(store, ds, name)
            metadata = {**(metadata or {}), "checksums": checks} if checks else metadata
        if isinstance(ds, Dataset):
            urls, sample_type = _dataset_urls(ds), sample_type or ds.sample_type  # [ds.url], as the original
        elif isinstance(ds, (str, os.PathLike)):
            urls = [_abs_url(os.fspath(ds))]
        else:
            urls = [_abs_url(os.fspath(u)) for u in ds]
        if not urls:
            raise ValueError(f"insert_dataset({name!r}): no shard URLs")
        if schema_ref is None:
            if sample_type is None or sample_type is DictSample or not issubclass(sample_type, PackableSample):
                raise SchemaError(
                    f"insert_dataset({name!r}) needs the sample schema: pass a typed Dataset[T], sample_type=T, "
                    "or schema_ref='atdata://local/schema/Name@1.0.0'"
                )
            schema_ref = self._ensure_schema(sample_type, None)
        meta = self._metadata(metadata, description, tags, license)
        return self._put(name, schema_ref, urls, meta, version, description)

    @staticmethod
    def _metadata(
        metadata: Mapping[str, Any] | None, description: str | None, tags: list[str] | None, license: str | None
    ) -> dict[str, Any]:
        meta = dict(metadata or {})
        for key, value in (("description", description), ("tags", list(tags) if tags else None), ("license", license)):
            if value is not None:
                meta[key] = value
        return meta

    def _put(
        self, name: str, schema: str, urls: list[str], meta: dict[str, Any], version: str | None, desc: str | None
    ) -> IndexEntry:
        cid = entry_cid(schema, urls)
        entry = IndexEntry(name=name, schema_ref=schema, data_urls=urls, metadata=meta or None, cid=cid)
        self.store.put_entry(entry, Label(name=name, cid=cid, version=version, description=desc))
        return entry

    def get_entry(self, cid: str) -> IndexEntry:
        """The entry with this CID.

        Raises:
            IndexNotFoundError: no such entry.
        """
        entry = self.store.get_entry(cid)
        if entry is None:
            raise IndexNotFoundError(f"no dataset entry with CID {cid!r} in the index at {self.location}")
        return entry

    def get_dataset(self, ref: str) -> IndexEntry:
        """Resolve ``name``, ``name@version``, ``@local/name[@version]`` or a CID to an entry.

        Without a version: the newest label of the name (by ``created_at``), else the newest entry of that name.

        Raises:
            IndexNotFoundError: unknown name (the message lists similar names) or version (lists the versions).
        """
        if ref.startswith("bafy"):
            hit = self.store.get_entry(ref)
            if hit is not None:
                return hit
        name, version = parse_dataset_ref(ref)
        label = self.store.get_label(name, version)
        if label is not None:
            entry = self.store.get_entry(label.cid)
            if entry is not None:
                return entry
            if version is not None:
                raise IndexStoreError(f"label {name}@{version} points at {label.cid}, which is not in the index")
        if version is not None:
            versions = sorted(lb.version or "(none)" for lb in self.store.labels_named(name))
            if versions:
                raise IndexNotFoundError(f"dataset {name!r} has no version {version!r}; versions: {versions}")
            raise self._not_found("dataset", name, self.store.names())
        entries = self.store.entries_named(name)
        if entries:
            return entries[0]
        raise self._not_found("dataset", name, self.store.names())

    def list_datasets(self) -> list[IndexEntry]:
        """Every entry, newest first."""
        return sorted(self.store.iter_entries(), key=lambda e: (e.created_at or "", e.name), reverse=True)

    def search(
        self,
        text: str | None = None,
        *,
        tags: Iterable[str] | None = None,
        schema: str | type | None = None,
        limit: int | None = 50,
    ) -> list[IndexEntry]:
        """Entries whose name, description, tags or schema name contain ``text`` (any case) and that carry every
        tag in ``tags``; newest first.

        Args:
            text: A substring; ``None`` matches everything.
            tags: Required tags.
            schema: Only entries of this schema (a class, a schema name, or a schema reference).
            limit: At most this many results (``None``: all).
        """
        needle = text.lower() if text else None
        want = set(tags or ())
        schema_name = _schema_name_of(schema) if schema is not None else None
        out = []
        for e in self.list_datasets():
            try:
                sname = parse_schema_ref(e.schema_ref)[0]
            except ValueError:
                sname = e.schema_ref
            if schema_name is not None and sname != schema_name:
                continue
            if want and not want.issubset(e.tags):
                continue
            if needle is not None:
                hay = " ".join([e.name, e.description or "", " ".join(e.tags), sname]).lower()
                if needle not in hay:
                    continue
            out.append(e)
            if limit is not None and len(out) >= limit:
                break
        return out

    def load(
        self, ref: str, sample_type: type | None = None, *, split: str | None = None, **source_options: Any
    ) -> Dataset[Any] | DatasetDict:
        """The dataset an index name refers to, as ``load_dataset`` returns it.

        Args:
            ref: ``name``, ``name@version``, ``@local/name[@version]`` or a CID.
            sample_type: The sample class; by default the class rebuilt from the entry's schema
                (:meth:`get_schema_type`), or ``DictSample`` when the schema is not in the index.
            split: ``None`` for a ``DatasetDict`` of the splits the shard names show (``train`` by default), or
                a split expression (``"train[:10%]"``).
            **source_options: Passed to the sources (``cache_dir=``, ...).
        """
        entry = self.get_dataset(ref)
        st: Any = sample_type if sample_type is not None else self._entry_type(entry)
        groups = _split_groups(entry.data_urls)
        dd = DatasetDict({k: Dataset(v, sample_type=st, **source_options) for k, v in groups.items()}, st)
        return dd if split is None else select_split(dd, split)

    def _entry_type(self, entry: IndexEntry) -> type:
        try:
            return self.get_schema_type(entry.schema_ref)
        except (IndexNotFoundError, SchemaError, ValueError) as exc:
            log.warning("atdata_torch: reading %s as DictSample: %s", entry.name, exc)
            return DictSample

    def promote(
        self,
        ref: str,
        *,
        to: Any = None,
        name: str | None = None,
        storage: str | None = None,
        progress: bool | None = None,
    ) -> str:
        """Publish a local entry to the AT Protocol: its schema, a dataset entry (local shards uploaded as blobs,
        remote ones recorded by URL) and a label for each version label the entry has here.

        Args:
            ref: ``name``, ``name@version``, ``@local/name[@version]`` or a CID.
            to: A logged-in :class:`~atdata_torch.atmosphere.Atmosphere` (default: ``Index(atmosphere=...)``'s).
            name: The published name (default: the entry's).
            storage: ``"blobs"``, ``"http"`` or ``"s3"`` (default: by the shards' kind).
            progress: tqdm bar while uploading.

        Returns:
            The at-uri of the published dataset entry.

        Raises:
            IndexNotFoundError: no such entry.
            SchemaError: the entry's schema is not in this index.
        """
        to = atmosphere_for(to, self.atmosphere, f"promote({ref!r})")
        entry = self.get_dataset(ref)
        sample_type = self.get_schema_type(entry.schema_ref)
        meta = {k: v for k, v in (entry.metadata or {}).items() if k not in ("checksums", "size", "tags", "license")}
        description = meta.pop("description", None)
        uri: str = to.publish_dataset(
            Dataset(entry.data_urls, sample_type=sample_type),
            name=name or entry.name,
            storage=storage,
            description=description,
            tags=list(entry.tags),
            license=(entry.metadata or {}).get("license"),
            metadata=meta or None,
            progress=progress,
        )
        for lb in self.store.labels_named(entry.name):
            if lb.cid == entry.cid and lb.version:
                to.label(name or entry.name, uri, version=lb.version, description=lb.description)
        return uri

    # ================================================================================================ labels
    def label(self, name: str, cid: str, *, version: str | None = None, description: str | None = None) -> Label:
        """Point ``name`` (``name@version``) at an entry; the newest label of a name is what ``name`` means.

        Raises:
            IndexNotFoundError: ``cid`` is not an entry of this index.
        """
        name = check_name(name)
        self.get_entry(cid)
        label = Label(name=name, cid=cid, version=version, description=description)
        self.store.put_label(label)
        return label

    def get_label(self, name: str, version: str | None = None) -> Label:
        """The label ``name@version`` (or the newest of ``name``).

        Raises:
            IndexNotFoundError: no such label.
        """
        label = self.store.get_label(name, version)
        if label is None:
            raise self._not_found(
                "label" if version is None else f"label version {version!r} of a dataset", name, self.store.names()
            )
        return label

    def list_labels(self, name: str | None = None) -> list[Label]:
        """Labels (of one name, newest first; or all)."""
        if name is not None:
            return self.store.labels_named(name)
        return sorted(self.store.iter_labels(), key=lambda lb: (lb.name, lb.created_at or ""))
