"""``Atmosphere``: publish and discover schemas, datasets, labels and lenses on any AT Protocol PDS.

Logged in, it writes records to the account's own repo; anonymous (:meth:`Atmosphere.anonymous`), it reads anyone's.
Every read of another repo goes to the PDS its DID document names (never a hard-wired host), and lists page through
``listRecords`` 100 records at a time.

Example (against a PDS; see ``tests/test_atmosphere.py`` for the real-network tests)::

    from atdata_torch.atmosphere import Atmosphere, CodeRef
    atmo = Atmosphere.login("alice.test", "alice-pass", pds="http://localhost:2583")
    schema_uri = atmo.publish_schema(ImageSample)             # reuses an identical published schema
    entry_uri = atmo.publish_dataset(ds, name="digits", storage="blobs")
    atmo.label("digits", entry_uri, version="1.0.0")
    atd.load_dataset("@alice.test/digits@1.0.0", split="train")
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..dataset import Dataset
from ..errors import (
    AuthError,
    BlobLimitError,
    IdentityError,
    PublishError,
    RecordNotFoundError,
    SchemaError,
)
from ..lens import Lens
from ..load import DatasetDict
from ..records import latest_semver, parse_semver
from ..schema import DictSample, PackableSample
from . import _lexicon as lex
from ._identity import Identity, _atproto, is_did, normalize_handle
from ._lenses import find_lenses, load_lens
from ._load import load_entry
from ._session import default_session_path, load_session, save_session
from ._storage import build_storage

__all__ = ["Atmosphere"]

log = logging.getLogger("atdata_torch")
T = TypeVar("T")

#: A record body a 0.4 PDS accepts is at most 150 KiB; stay clear of it.
MAX_RECORD_BYTES = 140_000
PAGE = 100


def _status(exc: Exception) -> tuple[int | None, str, str]:
    resp = getattr(exc, "response", None)
    status = getattr(resp, "status_code", None)
    content = getattr(resp, "content", None)
    error = str(getattr(content, "error", "") or "")
    message = str(getattr(content, "message", "") or "")
    return status, error, message


def _bump(v: str) -> str:
    sv = parse_semver(v)
    return f"{sv[0]}.{sv[1]}.{sv[2] + 1}" if sv else v + ".1"


class Atmosphere:
    """A connection to the AT Protocol network: a logged-in account (writes) or anonymous (reads).

    Build it with :meth:`login`, :meth:`from_session` or :meth:`anonymous`.

    Args:
        identity: Resolves handles and DIDs (PLC / did:web / a PDS).
        client: A logged-in ``atproto.Client``, or ``None`` for read-only use.
        did: The logged-in account's DID.
        handle: The logged-in account's handle.
        pds: The logged-in account's PDS endpoint.
        session_file: Where refreshed tokens are saved (``None``: not saved).
        max_blob_bytes: The PDS's blob size limit when known (checked before anything is uploaded).
        timeout: Seconds per request.
    """

    def __init__(
        self,
        identity: Identity,
        client: Any = None,
        *,
        did: str | None = None,
        handle: str | None = None,
        pds: str | None = None,
        session_file: str | os.PathLike[str] | None = None,
        max_blob_bytes: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.identity = identity
        self._client = client
        self.did = did
        self.handle = handle
        self.pds = pds.rstrip("/") if pds else identity.pds_url
        self.session_file = Path(session_file).expanduser() if session_file is not None else None
        self.max_blob_bytes = max_blob_bytes
        self.timeout = timeout
        self._readers: dict[str, Any] = {}
        if client is not None and self.session_file is not None:
            client.on_session_change(lambda _event, _session: self._persist())

    # ================================================================================================ sessions
    @classmethod
    def login(
        cls,
        handle: str | None = None,
        password: str | None = None,
        *,
        pds: str | None = None,
        plc: str | None = None,
        save_session: bool = False,
        session_file: str | os.PathLike[str] | None = None,
        max_blob_bytes: int | None = None,
        timeout: float = 30.0,
    ) -> Atmosphere:
        """Log in with a handle (or DID) and a password (an app password is best).

        Without ``handle``/``password`` they come from ``$ATDATA_HANDLE`` / ``$ATDATA_PASSWORD``; without those,
        the saved session is used (:meth:`from_session`).

        Args:
            handle: ``alice.bsky.social``, ``alice.test`` or a DID.
            password: The account's (app) password; never logged or shown.
            pds: A PDS to resolve the handle on (also ``$ATDATA_PDS_URL``); the account's own PDS always comes
                from its DID document.
            plc: The PLC directory (``$ATDATA_PLC_URL``, else https://plc.directory).
            save_session: Save the session (owner-only file) so later runs need no password.
            session_file: Where to save it (default: :func:`default_session_path`).
            max_blob_bytes: The PDS's blob limit, when known.
            timeout: Seconds per request.

        Raises:
            AuthError: wrong handle or password, or nothing to log in with.
            IdentityError: the handle or DID does not resolve.
            MissingDependencyError: the ``atmosphere`` extra is not installed.
        """
        handle = handle or os.environ.get("ATDATA_HANDLE")
        password = password or os.environ.get("ATDATA_PASSWORD")
        if not handle or not password:
            if handle is None and password is None:
                path = session_file or default_session_path()
                if Path(path).expanduser().exists():
                    return cls.from_session(path, plc=plc, pds=pds, max_blob_bytes=max_blob_bytes, timeout=timeout)
            raise AuthError(
                "Atmosphere.login needs a handle and a password (or ATDATA_HANDLE / ATDATA_PASSWORD, or a saved "
                "session from `atdata-torch login`)"
            )
        atproto = _atproto()
        ids = Identity(plc=plc, pds=pds, timeout=timeout)
        try:
            did = ids.resolve_handle(handle)
            endpoint = ids.pds_of(did)
        except BaseException:
            ids.close()
            raise
        client = atproto.Client(base_url=endpoint, request=atproto.Request(timeout=timeout))
        who = handle if is_did(handle) else normalize_handle(handle)
        try:
            client.login(who, password, fetch_bsky_profile=False)
        except atproto.exceptions.AtProtocolError as exc:
            status, error, message = _status(exc)
            client.request.close()
            ids.close()
            if status in (400, 401):
                raise AuthError(
                    f"login as {who} on {endpoint} failed: {message or error or 'invalid identifier or password'} "
                    f"(HTTP {status}); check the handle and password (an app password works too)"
                ) from None
            raise PublishError(
                f"login as {who} on {endpoint} failed ({type(exc).__name__}, HTTP {status}); is the PDS reachable?"
            ) from None
        sess_handle = client._session.handle if client._session is not None else who
        atmo = cls(
            ids,
            client,
            did=did,
            handle=str(sess_handle),
            pds=endpoint,
            session_file=(session_file or default_session_path()) if save_session or session_file else None,
            max_blob_bytes=max_blob_bytes,
            timeout=timeout,
        )
        atmo._persist()
        return atmo

    @classmethod
    def from_session(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        plc: str | None = None,
        pds: str | None = None,
        max_blob_bytes: int | None = None,
        timeout: float = 30.0,
    ) -> Atmosphere:
        """Resume a saved session (tokens are refreshed when the access token has expired, and saved again).

        Raises:
            AuthError: no session file, an unsafe one, or a session the PDS no longer accepts (log in again).
        """
        p = Path(path).expanduser() if path is not None else default_session_path()
        data = load_session(p)
        atproto = _atproto()
        ids = Identity(plc=plc or data.get("plc"), pds=pds, timeout=timeout)
        endpoint = str(data.get("pds") or "")
        client = atproto.Client(base_url=endpoint or None, request=atproto.Request(timeout=timeout))
        atmo = cls(
            ids,
            client,
            did=data.get("did"),
            handle=data.get("handle"),
            pds=endpoint,
            session_file=p,
            max_blob_bytes=max_blob_bytes,
            timeout=timeout,
        )
        try:
            client.login(session_string=str(data["session"]), fetch_bsky_profile=False)
        except atproto.exceptions.AtProtocolError as exc:
            status, error, message = _status(exc)
            atmo.close()
            raise AuthError(
                f"the saved session of {data.get('handle')} ({p}) was refused: {message or error} (HTTP {status}); "
                "log in again"
            ) from None
        return atmo

    @classmethod
    def anonymous(cls, *, pds: str | None = None, plc: str | None = None, timeout: float = 30.0) -> Atmosphere:
        """Read-only access: resolve, list, search and load anyone's records; no login.

        Args:
            pds: A PDS for handle resolution and :meth:`search` (``$ATDATA_PDS_URL``).
            plc: The PLC directory (``$ATDATA_PLC_URL``, else https://plc.directory).
            timeout: Seconds per request.
        """
        _atproto()
        return cls(Identity(plc=plc, pds=pds, timeout=timeout), None, timeout=timeout)

    def _persist(self) -> None:
        if self.session_file is None or self._client is None:
            return
        data = {
            "handle": self.handle,
            "did": self.did,
            "pds": self.pds,
            "plc": self.identity.plc_url,
            "session": self._client.export_session_string(),
        }
        save_session(self.session_file, data)

    def save_session(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save this session (mode 0600); later refreshes of the tokens are saved there too. Returns the path."""
        if self._client is None:
            raise AuthError("an anonymous Atmosphere has no session to save; log in first")
        p = Path(path).expanduser() if path is not None else default_session_path()
        if self.session_file is None:
            self._client.on_session_change(lambda _event, _session: self._persist())
        self.session_file = p
        self._persist()
        return p

    def close(self) -> None:
        """Close the HTTP connections."""
        for reader in self._readers.values():
            reader.request.close()
        self._readers.clear()
        if self._client is not None:
            self._client.request.close()
        self.identity.close()

    def __enter__(self) -> Atmosphere:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._client is None:
            return f"Atmosphere(anonymous, plc={self.identity.plc_url!r})"
        return f"Atmosphere(handle={self.handle!r}, did={self.did!r}, pds={self.pds!r})"

    # ================================================================================================ plumbing
    def _me(self) -> tuple[Any, str]:
        if self._client is None or self.did is None:
            raise AuthError("this Atmosphere is anonymous (read-only); log in with Atmosphere.login() to publish")
        return self._client, self.did

    def _call(self, what: str, fn: Callable[[], T], *, where: str | None = None) -> T:
        atproto = _atproto()
        for attempt in (0, 1):
            try:
                return fn()
            except atproto.exceptions.AtProtocolError as exc:
                status, error, message = _status(exc)
                if attempt == 0 and error in ("ExpiredToken", "InvalidToken") and self._client is not None:
                    try:
                        self._client._refresh_and_set_session()
                    except atproto.exceptions.AtProtocolError:
                        raise AuthError(
                            f"{what}: the session expired and could not be refreshed; log in again"
                        ) from None
                    continue
                place = f" ({where})" if where else ""
                if status == 413:
                    raise BlobLimitError(
                        f"{what}{place}: the PDS refused the request as too large (HTTP 413)"
                    ) from None
                if status in (401, 403):
                    raise AuthError(
                        f"{what}{place} was refused: {message or error} (HTTP {status}); an account can only write to "
                        "its own repo, and a session may have been revoked (log in again)"
                    ) from None
                if error in ("RecordNotFound", "RepoNotFound", "BlobNotFound", "InvalidRequest") and status == 400:
                    raise RecordNotFoundError(f"{what}{place}: {message or error}") from None
                detail = f"{message or error or type(exc).__name__}"
                raise PublishError(f"{what}{place} failed: {detail} (HTTP {status})") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _reader(self, endpoint: str) -> Any:
        endpoint = endpoint.rstrip("/")
        if self._client is not None and endpoint == self.pds:
            return self._client
        r = self._readers.get(endpoint)
        if r is None:
            atproto = _atproto()
            r = self._readers[endpoint] = atproto.Client(
                base_url=endpoint, request=atproto.Request(timeout=self.timeout)
            )
        return r

    def resolve(self, repo: str | None) -> str:
        """The DID of a repo given as handle or DID (``None``: the logged-in account).

        Raises:
            IdentityError: it does not resolve.
        """
        if repo is None:
            if self.did is None:
                raise IdentityError("no repo given, and this Atmosphere is anonymous; pass repo='handle' or a DID")
            return self.did
        if self.handle and not is_did(repo) and repo.lstrip("@").lower() == self.handle.lower() and self.did:
            return self.did
        return self.identity.resolve_handle(repo, pds=self.pds)

    def _pds_of(self, did: str) -> str:
        if did == self.did and self.pds:
            return self.pds
        return self.identity.pds_of(did)

    def _check_own(self, repo: str | None) -> tuple[Any, str]:
        client, did = self._me()
        if repo is not None and self.resolve(repo) != did:
            raise AuthError(
                f"logged in as {self.handle} ({did}), which cannot write to the repo of {repo}; log in as that "
                "account to publish there"
            )
        return client, did

    # ================================================================================================ records
    def create_record(self, collection: str, record: dict[str, Any], *, repo: str | None = None) -> str:
        """Write a record to the logged-in account's repo; returns its at-uri.

        Raises:
            AuthError: anonymous, or ``repo`` is another account's.
            PublishError: the PDS refused the record (e.g. floats, too large).
        """
        client, did = self._check_own(repo)
        lex.check_no_floats(record)
        body = json.dumps(record, default=str)
        if len(body) > MAX_RECORD_BYTES:
            raise PublishError(
                f"the {collection} record is {len(body):,} bytes; a PDS accepts about 150 KB per record. For a "
                "dataset, write fewer, larger shards (maxsize= / maxcount=) or publish with storage='http'/'s3'"
            )
        out = self._call(
            f"writing a {collection} record",
            lambda: client.com.atproto.repo.create_record({"repo": did, "collection": collection, "record": record}),
            where=self.pds,
        )
        return str(out.uri)

    def get_record(self, uri: str) -> tuple[str, dict[str, Any]]:
        """``(uri with a DID, record)`` of an at-uri (its repo may be a handle).

        Raises:
            RecordNotFoundError: no such record.
        """
        at = lex.AtUri.parse(uri)
        if not at.collection or not at.rkey:
            raise RecordNotFoundError(f"{uri} names a repo, not a record (expected at://repo/collection/rkey)")
        did = self.resolve(at.repo)
        endpoint = self._pds_of(did)
        reader = self._reader(endpoint)
        got = self._call(
            f"reading {uri}",
            lambda: reader.com.atproto.repo.get_record({"repo": did, "collection": at.collection, "rkey": at.rkey}),
            where=endpoint,
        )
        return str(lex.AtUri(did, at.collection, at.rkey)), got.value.to_dict()

    def list_records(self, collection: str, *, repo: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every record of a collection in a repo, paging through ``listRecords`` (100 per page)."""
        did = self.resolve(repo)
        endpoint = self._pds_of(did)
        reader = self._reader(endpoint)
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"repo": did, "collection": collection, "limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            page = self._call(
                f"listing {collection} of {repo or did}",
                functools.partial(reader.com.atproto.repo.list_records, params),
                where=endpoint,
            )
            for rec in page.records:
                yield str(rec.uri), rec.value.to_dict()
            cursor = page.cursor
            if not page.records or not cursor:
                return

    def _list_kind(self, kind: str, repo: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        for table in (lex.COLLECTIONS, lex.LEGACY_COLLECTIONS):
            yield from self.list_records(table[kind], repo=repo)

    # ================================================================================================ schemas
    def list_schemas(self, repo: str | None = None) -> list[lex.SchemaRecord]:
        """The schema records of a repo (either namespace)."""
        return [
            lex.SchemaRecord(uri=u, name=str(v.get("name", "")), version=str(v.get("version", "")), record=v)
            for u, v in self._list_kind("schema", repo)
        ]

    def publish_schema(
        self,
        sample_type: type,
        *,
        version: str | None = None,
        description: str | None = None,
        license: str | None = None,
        tags: list[str] | None = None,
    ) -> str:
        """Publish the schema of a ``@packable`` class, or reuse an identical one already in the repo.

        Args:
            sample_type: The ``@packable`` class.
            version: The schema version; ``None`` reuses an identical published schema of that name, else
                publishes the next patch version (``1.0.0`` first).
            description: Defaults to the class docstring.
            license: Stored in ``metadata.license``.
            tags: Stored in ``metadata.tags``.

        Returns:
            The schema record's at-uri.

        Raises:
            SchemaError: not ``@packable``, or ``name@version`` is published with different fields.
        """
        self._me()
        draft = lex.schema_record(sample_type, version=version or "1.0.0", description=description)
        sig = lex.signature(draft)
        same_name = [s for s in self.list_schemas() if s.name == draft["name"]]
        for s in same_name:
            if (version is None or s.version == version) and lex.signature(s.record) == sig:
                log.info("atdata_torch: reusing schema %s@%s (%s)", s.name, s.version, s.uri)
                return s.uri
        if version is not None and any(s.version == version for s in same_name):
            taken = next(s for s in same_name if s.version == version)
            raise SchemaError(
                f"schema {draft['name']}@{version} is already published ({taken.uri}) with different fields; "
                f"publish the new fields as another version (e.g. version={_bump(version)!r})"
            )
        if version is None and same_name:
            latest = latest_semver(s.version for s in same_name)
            version = _bump(latest) if latest else "1.0.0"
        rec = lex.schema_record(
            sample_type, version=version or "1.0.0", description=description, license=license, tags=tags
        )
        return self.create_record(lex.COLLECTIONS["schema"], rec)

    def get_schema(self, uri: str) -> lex.SchemaRecord:
        """A schema record by at-uri."""
        u, v = self.get_record(uri)
        return lex.SchemaRecord(uri=u, name=str(v.get("name", "")), version=str(v.get("version", "")), record=v)

    def schema_type(self, uri: str) -> type:
        """The ``@packable`` class a published schema describes (rebuilt from data; no code runs)."""
        return self.get_schema(uri).sample_type

    # ================================================================================================ datasets
    def publish_dataset(
        self,
        ds: Dataset[Any] | str | list[str],
        *,
        name: str,
        storage: str | None = None,
        sample_type: type | None = None,
        schema_uri: str | None = None,
        version: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        progress: bool | None = None,
    ) -> str:
        """Publish a dataset entry (and its schema, reused when identical).

        Args:
            ds: A ``Dataset`` (or shard URLs with ``sample_type``).
            name: The dataset name.
            storage: ``"blobs"`` (upload each shard to the PDS as it is, ``application/x-tar``, with its sha256 and
                its index sidecar), ``"http"`` (the shards' https URLs) or ``"s3"`` (their ``s3://bucket/key``);
                ``None``: blobs for local shards, else what the URLs are.
            sample_type: The sample class when ``ds`` is not a typed ``Dataset``.
            schema_uri: Use this published schema instead of publishing ``sample_type``'s.
            version: Also label the entry ``name@version``.
            description: Text.
            tags: Tags (used by :meth:`search`).
            license: An SPDX id or URL.
            metadata: Extra metadata (no floats: a PDS refuses them).
            endpoint: For ``storage="s3"``: the S3 endpoint to record (default: the dataset's source's).
            region: For ``storage="s3"``: the region to record.
            progress: tqdm bar while uploading (``None``: only on a terminal).

        Returns:
            The entry's at-uri.

        Raises:
            PublishError: a local file path would end up in the record, shards of mixed kinds, a float in
                ``metadata``, or the record is too large.
            BlobLimitError: a shard is larger than the PDS's blob limit.
            SchemaError: the samples are not typed and no ``schema_uri`` is given.
        """
        self._me()
        if not isinstance(ds, Dataset):
            ds = Dataset(ds, sample_type=sample_type or DictSample)
        st = sample_type or ds.sample_type
        if schema_uri is None:
            if st is None or st is DictSample or not (isinstance(st, type) and issubclass(st, PackableSample)):
                raise SchemaError(
                    f"publish_dataset({name!r}) needs the sample schema: pass a typed Dataset[T], sample_type=T, or "
                    "schema_uri='at://.../science.alt.dataset.schema/...'"
                )
            schema_uri = self.publish_schema(st)
        shards = ds.list_shards()
        if not shards:
            raise PublishError(f"publish_dataset({name!r}): the dataset has no shards")
        stor, size = build_storage(self, ds, shards, storage, endpoint=endpoint, region=region, progress=progress)
        rec = lex.entry_record(
            name=name,
            schema_uri=schema_uri,
            storage=stor,
            description=description,
            tags=tags,
            license=license,
            size=size,
            metadata=metadata,
        )
        uri = self.create_record(lex.COLLECTIONS["entry"], rec)
        if version is not None:
            self.label(name, uri, version=version, description=description)
        return uri

    def list_datasets(self, repo: str | None = None) -> list[lex.DatasetRecord]:
        """The dataset entries of a repo (either namespace), newest first."""
        did = self.resolve(repo)
        endpoint = self._pds_of(did)
        out = [lex.parse_entry(u, v, pds=endpoint) for u, v in self._list_kind("entry", did)]
        return sorted(out, key=lambda r: r.created_at or "", reverse=True)

    def get_dataset(self, ref: str) -> lex.DatasetRecord:
        """A dataset entry by at-uri (an entry, or a label that points at one) or ``@handle/name[@version]``.

        Without a version, the newest label of the name wins, else the newest entry of that name.

        Raises:
            RecordNotFoundError: nothing by that name (the message lists the repo's datasets) or version.
        """
        if ref.startswith("at://"):
            uri, value = self.get_record(ref)
            kind = lex.kind_of(lex.AtUri.parse(uri).collection or "")
            if kind == "label":
                return self.get_dataset(str(value.get("datasetUri")))
            if kind != "entry":
                raise RecordNotFoundError(f"{ref} is a {kind or 'foreign'} record, not a dataset entry or label")
            did = lex.AtUri.parse(uri).repo
            return lex.parse_entry(uri, value, pds=self._pds_of(did))
        repo, name, version = parse_name(ref)
        did = self.resolve(repo)
        labels = [lab for lab in self.list_labels(did) if lab.name == name]
        if version is not None:
            hits = [lab for lab in labels if lab.version == version]
            if not hits:
                versions = sorted({lab.version or "(none)" for lab in labels})
                raise RecordNotFoundError(
                    f"{repo} has no version {version!r} of {name!r}"
                    + (f"; versions: {versions}" if versions else "; it has no labels of that name")
                )
            return self.get_dataset(max(hits, key=lambda lab: lab.created_at or "").dataset_uri)
        if labels:
            return self.get_dataset(max(labels, key=lambda lab: lab.created_at or "").dataset_uri)
        entries = self.list_datasets(did)
        named = [e for e in entries if e.name == name]
        if named:
            return named[0]
        have = sorted({e.name for e in entries})
        raise RecordNotFoundError(f"{repo} has no dataset named {name!r}; its datasets: {have}")

    def load(
        self, ref: str, sample_type: type | None = None, *, split: str | None = None, **source_options: Any
    ) -> Dataset[Any] | DatasetDict:
        """A published dataset, as ``load_dataset`` returns it (blob checksums verified on download).

        Args:
            ref: An at-uri (entry or label) or ``@handle/name[@version]``.
            sample_type: The sample class; default: rebuilt from the entry's schema record.
            split: ``None`` for a ``DatasetDict`` of the splits the shard names show (``train`` by default), or a
                split expression.
            **source_options: Passed to the sources (``cache_dir=``, ``retries=``, S3 credentials, ...).
        """
        return load_entry(self, self.get_dataset(ref), sample_type, split=split, **source_options)

    # ================================================================================================ labels
    def label(self, name: str, dataset_uri: str, *, version: str | None = None, description: str | None = None) -> str:
        """Point ``name`` (``name@version``) at a dataset entry; returns the label's at-uri.

        Raises:
            RecordNotFoundError: ``dataset_uri`` is not a dataset entry.
        """
        self._me()
        self.get_dataset(dataset_uri)  # it must exist and be an entry
        rec = lex.label_record(name=name, dataset_uri=dataset_uri, version=version, description=description)
        return self.create_record(lex.COLLECTIONS["label"], rec)

    def list_labels(self, repo: str | None = None) -> list[lex.LabelRecord]:
        """The label records of a repo (either namespace)."""
        return [lex.parse_label(u, v) for u, v in self._list_kind("label", repo)]

    # ================================================================================================ lenses
    def publish_lens(
        self,
        lens: Lens[Any, Any],
        *,
        code: lex.CodeRef,
        putter_code: lex.CodeRef | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> str:
        """Publish a lens as code references (a record never carries code) and its two schemas.

        Args:
            lens: The lens (its source and view types must be ``@packable``).
            code: Where the lens lives: repository, exact commit, ``module:qualname`` of the ``Lens`` object (or
                of its getter function).
            putter_code: Where the putter lives, when it is a separate function (default: ``code``).
            name: The lens name (default: the lens's).
            description: Text.
        """
        src = self.publish_schema(lens.source_type)
        dst = self.publish_schema(lens.view_type)
        rec = lex.lens_record(
            name=name or str(lens.name),
            source_schema=src,
            target_schema=dst,
            getter=code,
            putter=putter_code or code,
            description=description,
        )
        return self.create_record(lex.COLLECTIONS["lens"], rec)

    def find_lenses(
        self, *, source: type | str | None = None, target: type | str | None = None, repo: str | None = None
    ) -> list[lex.LensRecord]:
        """Lens records of a repo, optionally only those from / to a schema (a class, its name, or an at-uri)."""

        return find_lenses(self, source=source, target=target, repo=repo)

    def load_lens(
        self, lens: lex.LensRecord | str, *, allow: Iterable[str] = (), register: bool = False
    ) -> Lens[Any, Any]:
        """Turn a lens record into a :class:`~atdata_torch.Lens`, only from code you installed and allowed.

        Records from other accounts are data: the code they point at is imported only when its module (or
        ``module:qualname``) is in ``allow`` and is installed; nothing is downloaded or evaluated.

        Args:
            lens: A :class:`LensRecord` or its at-uri.
            allow: Modules (``"pkg.lenses"``) or exact references (``"pkg.lenses:gray"``) you trust.
            register: Also add it to the default lens registry (so ``Dataset.as_type`` finds it).

        Raises:
            AuthError: the code it names is not allowed.
            LensNotFoundError: the module is not installed, or the name is not a lens/function.
            SchemaError: the installed lens's types do not match the record's schemas.
        """
        return load_lens(self, lens, allow=allow, register=register)

    # ================================================================================================ discovery
    def list_repos(self, pds: str | None = None, *, limit: int = 10_000) -> list[str]:
        """The DIDs of the repos a PDS hosts (``com.atproto.sync.listRepos``, paged)."""
        endpoint = (pds or self.pds or "").rstrip("/")
        if not endpoint:
            raise PublishError("list_repos needs a PDS: pass pds=, log in, or set ATDATA_PDS_URL")
        reader = self._reader(endpoint)
        out: list[str] = []
        cursor: str | None = None
        while len(out) < limit:
            params: dict[str, Any] = {"limit": min(1000, limit - len(out))}
            if cursor:
                params["cursor"] = cursor
            page = self._call(
                "listing repos",
                functools.partial(reader.com.atproto.sync.list_repos, params),
                where=endpoint,
            )
            out.extend(str(r.did) for r in page.repos)
            cursor = page.cursor
            if not page.repos or not cursor:
                break
        return out

    def search(
        self,
        text: str | None = None,
        *,
        repos: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        limit: int | None = 50,
    ) -> list[lex.DatasetRecord]:
        """Dataset entries whose name, description or tags contain ``text`` (any case) and carry every tag.

        Without an app view there is no global index: the search covers ``repos`` (handles or DIDs), by default
        every repo on this PDS (``com.atproto.sync.listRepos``). Newest first.
        """
        needle = text.lower() if text else None
        want = set(tags or ())
        dids = [self.resolve(r) for r in repos] if repos is not None else self.list_repos()
        hits: list[lex.DatasetRecord] = []
        for did in dids:
            try:
                entries = self.list_datasets(did)
            except (RecordNotFoundError, IdentityError) as exc:
                log.info("atdata_torch: search skips %s (%s)", did, exc)
                continue
            for e in entries:
                if want and not want.issubset(e.tags):
                    continue
                hay = " ".join([e.name, e.description or "", " ".join(e.tags)]).lower()
                if needle is None or needle in hay:
                    hits.append(e)
        hits.sort(key=lambda r: r.created_at or "", reverse=True)
        return hits if limit is None else hits[:limit]


def parse_name(ref: str) -> tuple[str, str, str | None]:
    """``(repo, name, version)`` of ``@handle/name[@version]`` (or ``handle/name``, or a DID).

    Raises:
        ValueError: not such a name.

    Example:
        >>> parse_name("@alice.test/digits@1.0.0"), parse_name("did:plc:abc/mnist")
        (('alice.test', 'digits', '1.0.0'), ('did:plc:abc', 'mnist', None))
    """
    body = ref[1:] if ref.startswith("@") else ref
    repo, sep, rest = body.partition("/")
    if not sep or not repo or not rest:
        raise ValueError(f"{ref!r} is not '@handle/name[@version]'")
    name, _, version = rest.partition("@")
    if not name:
        raise ValueError(f"{ref!r} has no dataset name")
    return repo, name, version or None
