"""``science.alt.dataset.entry`` records (and the older ``ac.foundation.dataset.record``) and the labels that name
them, built and parsed; every storage kind (blobs, http, s3, the legacy external URL list).

Example:
    >>> rec = parse_entry("at://did:plc:x/science.alt.dataset.entry/3kx",
    ...                   {"name": "digits", "storage": {"urls": ["https://host/a.tar"]}})
    >>> rec.storage, rec.urls
    ('external', ['https://host/a.tar'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import PublishError
from ._lex_base import COLLECTIONS, AtUri, check_no_floats, now_iso
from ._lex_schema import EXT_KEY

__all__ = [
    "DatasetRecord",
    "LabelRecord",
    "Shard",
    "blob_url",
    "entry_record",
    "label_record",
    "parse_entry",
    "parse_label",
    "parse_storage",
]


def entry_record(
    *,
    name: str,
    schema_uri: str,
    storage: dict[str, Any],
    description: str | None = None,
    tags: list[str] | None = None,
    license: str | None = None,
    size: Mapping[str, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``science.alt.dataset.entry`` record.

    Raises:
        PublishError: a float in ``metadata``.
    """
    rec: dict[str, Any] = {
        "$type": COLLECTIONS["entry"],
        "name": name,
        "schemaRef": schema_uri,
        "storage": storage,
        "createdAt": now_iso(),
        "tags": list(tags or []),
    }
    if description:
        rec["description"] = description
    if license:
        rec["license"] = license
    if size:
        rec["size"] = {k: int(v) for k, v in size.items() if v is not None}
    if metadata:
        rec["metadata"] = dict(metadata)
    check_no_floats(rec)
    return rec


@dataclass(frozen=True)
class Shard:
    """One shard of a dataset record: where to read it, its sha256 (when recorded), its file name, its index blob."""

    url: str
    sha256: str | None = None
    name: str | None = None
    index_url: str | None = None
    samples: int | None = None


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset entry read back from a repo (either namespace, any storage kind).

    ``storage`` is ``"blobs"``, ``"http"``, ``"s3"`` or ``"external"`` (the legacy URL list); ``shards`` say where to
    read each shard (blob download URLs for blobs, ``s3://bucket/key`` for S3).
    """

    uri: str
    name: str
    schema_ref: str
    storage: str
    shards: tuple[Shard, ...]
    created_at: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    license: str | None = None
    size: dict[str, int] = field(default_factory=dict)
    s3: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def repo(self) -> str:
        """The DID (or handle) of the repo that holds the record."""
        return AtUri.parse(self.uri).repo

    @property
    def urls(self) -> list[str]:
        """The shard URLs, in order."""
        return [s.url for s in self.shards]


def blob_url(pds: str, did: str, cid: str) -> str:
    """The ``com.atproto.sync.getBlob`` URL of a blob.

    Example:
        >>> blob_url("http://localhost:2583/", "did:plc:x", "bafkrei")
        'http://localhost:2583/xrpc/com.atproto.sync.getBlob?did=did:plc:x&cid=bafkrei'
    """
    return f"{pds.rstrip('/')}/xrpc/com.atproto.sync.getBlob?did={did}&cid={cid}"


def _cid_of(ref: Any) -> str:
    if isinstance(ref, Mapping):
        inner = ref.get("ref")
        if isinstance(inner, Mapping) and "$link" in inner:
            return str(inner["$link"])
        if isinstance(inner, str):
            return inner
        if "cid" in ref:  # legacy blob ref {"cid", "mimeType"}
            return str(ref["cid"])
    raise PublishError(f"not a blob reference: {ref!r}")


def _digest(checksum: Any) -> str | None:
    if isinstance(checksum, Mapping) and str(checksum.get("algorithm", "")).lower() == "sha256":
        d = checksum.get("digest")
        return str(d).lower() if d else None
    return None


def parse_entry(uri: str, value: Mapping[str, Any], *, pds: str | None = None) -> DatasetRecord:
    """Read a dataset entry record (``science.alt.dataset.entry`` or ``ac.foundation.dataset.record``).

    Args:
        uri: The record's at-uri (its repo DID is the blob owner).
        value: The record.
        pds: The PDS endpoint of the repo (needed to turn blobs into download URLs).

    Raises:
        PublishError: the storage kind is unknown, or blob storage without a PDS endpoint.
    """
    storage = value.get("storage") or {}
    kind, shards, s3 = parse_storage(uri, storage, pds=pds)
    size = value.get("size") or {}
    return DatasetRecord(
        uri=uri,
        name=str(value.get("name", "")),
        schema_ref=str(value.get("schemaRef", "")),
        storage=kind,
        shards=tuple(shards),
        created_at=value.get("createdAt"),
        description=value.get("description"),
        tags=tuple(value.get("tags") or ()),
        license=value.get("license"),
        size={k: int(v) for k, v in size.items() if isinstance(v, int)},
        s3=s3,
        record=dict(value),
    )


def parse_storage(
    uri: str, storage: Mapping[str, Any], *, pds: str | None = None
) -> tuple[str, list[Shard], dict[str, str]]:
    """``(kind, shards, s3 location)`` of an entry's ``storage`` object (see :func:`parse_entry`).

    Raises:
        PublishError: the storage kind is unknown, or blob storage without a PDS endpoint.

    Example:
        >>> kind, shards, s3 = parse_storage("at://did:plc:x/c/k", {"bucket": "b", "shards": [{"key": "a.tar"}]})
        >>> kind, shards[0].url, s3
        ('s3', 's3://b/a.tar', {'bucket': 'b'})
    """
    stype = str(storage.get("$type", ""))
    if stype.endswith(".storageBlobs") or "blobs" in storage:
        return "blobs", _blob_shards(uri, storage, pds), {}
    if stype.endswith(".storageS3") or "bucket" in storage:
        bucket = str(storage.get("bucket", ""))
        s3 = {k: str(storage[k]) for k in ("bucket", "region", "endpoint") if storage.get(k)}
        shards = [
            Shard(url=f"s3://{bucket}/{s['key']}", sha256=_digest(s.get("checksum")))
            for s in storage.get("shards") or []
        ]
        return "s3", shards, s3
    if stype.endswith(".storageHttp") or "shards" in storage:
        shards = [Shard(url=str(s["url"]), sha256=_digest(s.get("checksum"))) for s in storage.get("shards") or []]
        return "http", shards, {}
    if stype.endswith(".storageExternal") or "urls" in storage:
        return "external", [Shard(url=str(u)) for u in storage.get("urls") or []], {}
    raise PublishError(
        f"{uri}: unknown storage kind {stype!r}; this version reads storageBlobs, storageHttp, storageS3 and "
        "storageExternal",
        shard=uri,
    )


def _blob_shards(uri: str, storage: Mapping[str, Any], pds: str | None) -> list[Shard]:
    if pds is None:
        raise PublishError(f"{uri}: blob storage needs the repo's PDS endpoint", shard=uri)
    did = AtUri.parse(uri).repo
    shards: list[Shard] = []
    for b in storage.get("blobs") or []:
        ext = b.get(EXT_KEY) or {}
        index = ext.get("index")
        shards.append(
            Shard(
                url=blob_url(pds, did, _cid_of(b.get("blob"))),
                sha256=_digest(b.get("checksum")),
                name=ext.get("name"),
                index_url=blob_url(pds, did, _cid_of(index)) if index else None,
                samples=ext.get("samples"),
            )
        )
    return shards


# ------------------------------------------------------------------------------------------------------ labels
def label_record(
    *, name: str, dataset_uri: str, version: str | None = None, description: str | None = None
) -> dict[str, Any]:
    """A ``science.alt.dataset.label`` record: ``name`` (``@version``) points at a dataset entry."""
    rec: dict[str, Any] = {
        "$type": COLLECTIONS["label"],
        "name": name,
        "datasetUri": dataset_uri,
        "createdAt": now_iso(),
    }
    if version:
        rec["version"] = version
    if description:
        rec["description"] = description
    return rec


@dataclass(frozen=True)
class LabelRecord:
    """A label read back: ``name@version`` -> ``dataset_uri``."""

    uri: str
    name: str
    dataset_uri: str
    version: str | None = None
    created_at: str | None = None
    description: str | None = None


def parse_label(uri: str, value: Mapping[str, Any]) -> LabelRecord:
    """Read a label record (either namespace)."""
    return LabelRecord(
        uri=uri,
        name=str(value.get("name", "")),
        dataset_uri=str(value.get("datasetUri", "")),
        version=value.get("version") or None,
        created_at=value.get("createdAt"),
        description=value.get("description"),
    )
