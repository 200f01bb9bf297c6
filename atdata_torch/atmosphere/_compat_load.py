"""The original atdata's loader classes (``SchemaLoader``, ``DatasetLoader``, ``LensLoader``, ``LabelLoader``) and
``AtmosphereIndex`` / ``AtmosphereIndexEntry``, over :class:`~atdata_torch.atmosphere.Atmosphere`.

Records come back as plain dicts (the record's value) as in the original; ``get_typed`` gives the ``Lex*`` view.
Reads need no login (``Atmosphere.anonymous()``).

Example (needs a PDS)::

    loader = DatasetLoader(Atmosphere.anonymous(pds="http://localhost:2583"))
    record = loader.get("at://did:plc:.../science.alt.dataset.entry/3k...")
    ds = loader.to_dataset(record_uri, MySample)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import RecordNotFoundError
from ..records import latest_semver
from ._client import Atmosphere
from ._compat import DatasetPublisher, SchemaPublisher
from ._compat_lex import LexDatasetEntry, LexLabelRecord, LexLensRecord, LexSchemaRecord
from ._lex_base import COLLECTIONS, LEGACY_COLLECTIONS, AtUri, kind_of
from ._lex_entry import parse_entry
from ._lex_schema import schema_type
from ._load import _dataset

__all__ = [
    "AtmosphereIndex",
    "AtmosphereIndexEntry",
    "DatasetLoader",
    "LabelLoader",
    "LensLoader",
    "SchemaLoader",
]


class _Loader:
    kind = ""

    def __init__(self, client: Atmosphere) -> None:
        self.client = client

    def get(self, uri: str | AtUri) -> dict[str, Any]:
        """The record at ``uri`` (its value).

        Raises:
            RecordNotFoundError: no such record, or it is not of this loader's kind.
        """
        _, value = self.client.get_record(str(uri))
        if kind_of(str(value.get("$type", ""))) != self.kind:
            raise RecordNotFoundError(
                f"{uri} is a {value.get('$type')!r} record, not a {COLLECTIONS[self.kind]} record; "
                f"pass the at-uri of a {self.kind} record"
            )
        return value

    def _records(self, repo: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        for table in (COLLECTIONS, LEGACY_COLLECTIONS):
            yield from self.client.list_records(table[self.kind], repo=repo)

    def list_all(self, repo: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Up to ``limit`` records of this kind in ``repo`` (default: the logged-in account), as dicts."""
        out: list[dict[str, Any]] = []
        for _, value in self._records(repo):
            if len(out) >= limit:
                break
            out.append(value)
        return out


class SchemaLoader(_Loader):
    """Read schema records; :meth:`get` also takes ``@handle/Name@version``."""

    kind = "schema"

    def get(self, uri: str | AtUri) -> dict[str, Any]:
        """A schema record by at-uri or ``@handle/Name[@version]``."""
        ref = str(uri)
        if ref.startswith("@"):
            handle, _, rest = ref[1:].partition("/")
            name, _, version = rest.partition("@")
            return self.resolve(handle, name, version or None)
        return super().get(ref)

    def get_typed(self, uri: str | AtUri) -> LexSchemaRecord:
        """The schema record as a :class:`LexSchemaRecord`."""
        return LexSchemaRecord.from_record(self.get(uri))

    def resolve(self, handle_or_did: str, schema_id: str, version: str | None = None) -> dict[str, Any]:
        """The schema ``schema_id`` (its name) of a repo: that ``version``, else the newest.

        Raises:
            RecordNotFoundError: no schema of that name (and version); the message lists the repo's schemas.
        """
        found = [s for s in self.client.list_schemas(handle_or_did) if s.name == schema_id]
        hits = [s for s in found if version is None or s.version == version]
        if not hits:
            names = sorted({f"{s.name}@{s.version}" for s in self.client.list_schemas(handle_or_did)})
            want = schema_id if version is None else f"{schema_id}@{version}"
            raise RecordNotFoundError(f"no schema {want} in the repo of {handle_or_did}; it has {names}")
        best = latest_semver(s.version for s in hits) if version is None else version
        return next(s for s in hits if s.version == best).record


class DatasetLoader(_Loader):
    """Read dataset entries; :meth:`to_dataset` opens one as a ``Dataset``."""

    kind = "entry"

    def get_typed(self, uri: str | AtUri) -> LexDatasetEntry:
        """The entry as a :class:`LexDatasetEntry`."""
        return LexDatasetEntry.from_record(self.get(uri))

    def _parsed(self, uri: str | AtUri) -> Any:
        full, value = self.client.get_record(str(uri))
        self.get(full)  # checks the kind
        return parse_entry(full, value, pds=self.client.xrpc.pds_of(AtUri.parse(full).repo))

    def get_storage_type(self, uri: str | AtUri) -> str:
        """``"http"``, ``"s3"``, ``"blobs"`` or ``"external"``."""
        return str(self._parsed(uri).storage)

    def get_urls(self, uri: str | AtUri) -> list[str]:
        """The shard URLs (blob download URLs for blob storage)."""
        return list(self._parsed(uri).urls)

    def get_blob_urls(self, uri: str | AtUri) -> list[str]:
        """The blob download URLs (empty unless the entry stores blobs)."""
        rec = self._parsed(uri)
        return list(rec.urls) if rec.storage == "blobs" else []

    def get_blobs(self, uri: str | AtUri) -> list[dict[str, Any]]:
        """The ``storageBlobs`` blob refs (``{"$type": "blob", "ref": {"$link": cid}, ...}``)."""
        storage = self.get(uri).get("storage") or {}
        return [dict(b.get("blob", b)) for b in storage.get("blobs") or []]

    def get_s3_info(self, uri: str | AtUri) -> dict[str, Any]:
        """``{"bucket", "keys", "region", "endpoint"}`` of an S3 entry."""
        storage = self.get(uri).get("storage") or {}
        return {
            "bucket": storage.get("bucket"),
            "keys": [s.get("key") for s in storage.get("shards") or []],
            "region": storage.get("region"),
            "endpoint": storage.get("endpoint"),
        }

    def get_metadata(self, uri: str | AtUri) -> dict[str, Any] | None:
        """The entry's ``metadata`` object, if any."""
        meta = self.get(uri).get("metadata")
        return dict(meta) if isinstance(meta, dict) else None

    def get_metadata_typed(self, uri: str | AtUri) -> dict[str, Any] | None:
        """As :meth:`get_metadata` (deviation: a plain dict, not the original's ``DatasetMetadata``)."""
        return self.get_metadata(uri)

    def get_content_metadata(self, uri: str | AtUri) -> dict[str, Any] | None:
        """The entry's ``contentMetadata``, if any."""
        meta = self.get(uri).get("contentMetadata")
        return dict(meta) if isinstance(meta, dict) else None

    def get_metadata_schema_ref(self, uri: str | AtUri) -> str | None:
        """The entry's ``metadataSchemaRef`` (an at-uri), if any."""
        ref = self.get(uri).get("metadataSchemaRef")
        return str(ref) if ref is not None else None

    def to_dataset(self, uri: str | AtUri, sample_type: type) -> Any:
        """A ``Dataset[sample_type]`` over every shard of the entry (blob checksums verified on download)."""
        rec = self._parsed(uri)
        if not rec.shards:
            raise RecordNotFoundError(f"{uri} lists no shards")
        return _dataset(rec, list(rec.shards), sample_type, {})


class LensLoader(_Loader):
    """Read lens records (data only; ``Atmosphere.load_lens`` turns one into a lens from allowed code)."""

    kind = "lens"

    def get_typed(self, uri: str | AtUri) -> LexLensRecord:
        """The lens record as a :class:`LexLensRecord`."""
        return LexLensRecord.from_record(self.get(uri))

    def find_by_schemas(
        self, source_schema_uri: str, target_schema_uri: str | None = None, repo: str | None = None
    ) -> list[dict[str, Any]]:
        """Lens records from ``source_schema_uri`` (and to ``target_schema_uri``) in ``repo``."""
        return [
            v
            for _, v in self._records(repo)
            if v.get("sourceSchema") == str(source_schema_uri)
            and (target_schema_uri is None or v.get("targetSchema") == str(target_schema_uri))
        ]


class LabelLoader(_Loader):
    """Read labels; :meth:`resolve` turns ``name[@version]`` into a dataset at-uri."""

    kind = "label"

    def get_typed(self, uri: str | AtUri) -> LexLabelRecord:
        """The label as a :class:`LexLabelRecord`."""
        return LexLabelRecord.from_record(self.get(uri))

    def resolve(self, handle_or_did: str, name: str, version: str | None = None) -> str:
        """The dataset at-uri that ``name`` (``@version``; default: the newest label) points at.

        Raises:
            RecordNotFoundError: no such label; the message lists the repo's labels.
        """
        labels = [lb for lb in self.client.list_labels(handle_or_did) if lb.name == name]
        hits = [lb for lb in labels if version is None or lb.version == version]
        if not hits:
            have = sorted({f"{lb.name}@{lb.version or ''}" for lb in self.client.list_labels(handle_or_did)})
            raise RecordNotFoundError(
                f"no label {name}@{version or '(any)'} in the repo of {handle_or_did}; it has {have}"
            )
        return max(hits, key=lambda lb: lb.created_at or "").dataset_uri


class AtmosphereIndexEntry:
    """A published dataset entry with the index-entry interface (``name``, ``schema_ref``, ``data_urls``,
    ``metadata``, ``uri``).

    Args:
        uri: The entry's at-uri.
        record: The record's value.
        pds: The PDS that hosts the repo (needed for the blob URLs of blob storage).
    """

    def __init__(self, uri: str, record: dict[str, Any], *, pds: str | None = None) -> None:
        self._uri, self._record, self._pds = str(uri), record, pds

    @property
    def name(self) -> str:
        """The dataset name."""
        return str(self._record.get("name", ""))

    @property
    def schema_ref(self) -> str:
        """The schema record's at-uri."""
        return str(self._record.get("schemaRef", ""))

    @property
    def data_urls(self) -> list[str]:
        """The shard URLs (blob download URLs for blob storage)."""
        return parse_entry(self._uri, self._record, pds=self._pds).urls

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The record's ``metadata`` object, if any."""
        meta = self._record.get("metadata")
        return dict(meta) if isinstance(meta, dict) else None

    @property
    def uri(self) -> str:
        """The entry's at-uri."""
        return self._uri

    def __repr__(self) -> str:
        return f"AtmosphereIndexEntry(uri={self._uri!r}, name={self.name!r})"


class AtmosphereIndex:
    """The original's (deprecated there) index over one account: datasets and schemas on the AT Protocol.

    Args:
        client: An :class:`Atmosphere` (logged in for writes).
        data_store: Accepted for the original's signature; shards are always uploaded by
            :meth:`Atmosphere.publish_dataset`.
    """

    def __init__(self, client: Atmosphere, *, data_store: Any = None) -> None:
        self.client, self.data_store = client, data_store
        self._datasets, self._schemas = DatasetLoader(client), SchemaLoader(client)

    def _entry(self, uri: str, value: dict[str, Any]) -> AtmosphereIndexEntry:
        return AtmosphereIndexEntry(uri, value, pds=self.client.xrpc.pds_of(AtUri.parse(uri).repo))

    def insert_dataset(
        self, ds: Any, *, name: str, schema_ref: str | None = None, **kwargs: Any
    ) -> AtmosphereIndexEntry:
        """Publish ``ds`` (``description=``, ``tags=``, ``license=`` accepted) and return its entry."""
        uri = DatasetPublisher(self.client).publish(
            ds,
            name=name,
            schema_uri=schema_ref,
            description=kwargs.get("description"),
            tags=kwargs.get("tags"),
            license=kwargs.get("license"),
        )
        full, value = self.client.get_record(str(uri))
        return self._entry(full, value)

    def get_dataset(self, ref: str) -> AtmosphereIndexEntry:
        """An entry by at-uri (or ``@handle/name[@version]``)."""
        rec = self.client.get_dataset(ref)
        return self._entry(rec.uri, rec.record)

    @property
    def datasets(self) -> Iterator[AtmosphereIndexEntry]:
        """Every entry of the logged-in account."""
        return iter(self.list_datasets())

    def list_datasets(self, repo: str | None = None) -> list[AtmosphereIndexEntry]:
        """The entries of ``repo`` (default: the logged-in account), newest first."""
        return [self._entry(r.uri, r.record) for r in self.client.list_datasets(repo)]

    def publish_schema(self, sample_type: type, *, version: str = "1.0.0", **kwargs: Any) -> str:
        """Publish a schema; returns its at-uri (``description=`` accepted)."""
        uri = SchemaPublisher(self.client).publish(sample_type, version=version, description=kwargs.get("description"))
        return str(uri)

    def get_schema(self, ref: str) -> dict[str, Any]:
        """A schema record by at-uri or ``@handle/Name@version``."""
        return self._schemas.get(ref)

    @property
    def schemas(self) -> Iterator[dict[str, Any]]:
        """Every schema record of the logged-in account."""
        return iter(self.list_schemas())

    def list_schemas(self, repo: str | None = None) -> list[dict[str, Any]]:
        """The schema records of ``repo``."""
        return self._schemas.list_all(repo=repo, limit=10_000)

    def get_schema_type(self, ref: str) -> type:
        """The ``@packable`` class a schema record describes (rebuilt from data; no code runs)."""
        return schema_type(self.get_schema(ref))

    def decode_schema(self, ref: str) -> type:
        """The original's older name for :meth:`get_schema_type`."""
        return self.get_schema_type(ref)
