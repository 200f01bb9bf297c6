"""The original atdata's ``PDSBlobStore``: upload a dataset's existing shard files as PDS blobs, byte for byte.

``write_shards`` returns a :class:`ShardUploadResult`: a ``list`` of ``at://{did}/blob/{cid}`` URLs (as the original)
that also carries ``.blob_refs`` (the blob references a ``storageBlobs`` record holds) and ``.checksums`` (``{at-url:
sha256}``). Hand it to :meth:`DatasetPublisher.publish_with_blob_refs` to publish the entry, or read it back with
:meth:`PDSBlobStore.create_source`.

Example (needs a PDS; the tests run one on loopback)::

    store = PDSBlobStore(atmo)
    urls = store.write_shards(ds)                      # ['at://did:plc:.../blob/bafkrei...', ...]
    uri = DatasetPublisher(atmo).publish_with_blob_refs(urls.blob_refs, schema_uri, name="digits",
                                                        checksums=urls.checksums)
    back = atd.Dataset(store.create_source(urls), sample_type=Digit)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..dataset import Dataset
from ..errors import PublishError
from ..sources.blob import BlobSource
from ._client import Atmosphere
from ._lex_base import COLLECTIONS, NO_CHECKSUM, now_iso
from ._lex_entry import blob_url, entry_record
from ._storage import _is_local, _local_path, _upload, shard_name

__all__ = ["PDSBlobStore", "ShardUploadResult", "blob_entry_record", "parse_blob_url"]

_MIME = "application/x-tar"


class ShardUploadResult(list[str]):
    """What :meth:`PDSBlobStore.write_shards` returns: the ``at://{did}/blob/{cid}`` URLs, in shard order.

    Attributes:
        blob_refs: ``{"$type": "blob", "ref": {"$link": cid}, "mimeType", "size"}`` per shard, as the PDS returned.
        checksums: ``{at-url: sha256 hex}`` of the uploaded bytes.

    Example:
        >>> r = ShardUploadResult(["at://did:plc:a/blob/b"], [{"ref": {"$link": "b"}}], {"at://did:plc:a/blob/b": "00"})
        >>> (list(r), r.blob_refs[0]["ref"]["$link"])
        (['at://did:plc:a/blob/b'], 'b')
    """

    blob_refs: list[dict[str, Any]]
    checksums: dict[str, str]

    def __init__(
        self, urls: list[str], blob_refs: list[dict[str, Any]], checksums: dict[str, str] | None = None
    ) -> None:
        super().__init__(urls)
        self.blob_refs = blob_refs
        self.checksums = dict(checksums or {})


def parse_blob_url(url: str) -> tuple[str, str]:
    """``(did, cid)`` of ``at://{did}/blob/{cid}``.

    Raises:
        PublishError: the URL is not of that form.

    Example:
        >>> parse_blob_url("at://did:plc:abc/blob/bafkreia")
        ('did:plc:abc', 'bafkreia')
    """
    parts = url[len("at://") :].split("/") if url.startswith("at://") else []
    if len(parts) != 3 or parts[1] != "blob" or not parts[0].startswith("did:") or not parts[2]:
        raise PublishError(
            f"{url!r} is not a blob URL: expected at://<did>/blob/<cid>, as PDSBlobStore.write_shards returns"
        )
    return parts[0], parts[2]


@dataclass
class PDSBlobStore:
    """Stores shards as blobs on the logged-in account's PDS (the original's ``AbstractDataStore`` for atmosphere).

    Args:
        client: A logged-in :class:`~atdata_torch.atmosphere.Atmosphere`.
    """

    client: Atmosphere

    def write_shards(self, ds: Dataset[Any], *, prefix: str | None = None, **kwargs: Any) -> ShardUploadResult:
        """Upload the shard files of ``ds`` as they are (``application/x-tar``), one blob per shard.

        Args:
            ds: The dataset whose shards to upload (local files; remote shards are fetched and uploaded unchanged).
            prefix: Ignored (the original keeps it for protocol compatibility).
            **kwargs: ``timeout`` is accepted and ignored (the client's timeout applies).

        Returns:
            The ``at://`` URLs, carrying ``.blob_refs`` and ``.checksums``.

        Raises:
            AuthError: the client is anonymous.
            PublishError: the dataset has no shards.
            BlobLimitError: a shard is larger than the PDS accepts (checked before anything is uploaded when the
                limit is known).
        """
        xrpc = self.client.xrpc
        _, did = xrpc.account()
        shards = ds.list_shards()
        if not shards:
            raise PublishError("PDSBlobStore.write_shards: the dataset has no shards to upload; write some first")
        urls: list[str] = []
        refs: list[dict[str, Any]] = []
        sums: dict[str, str] = {}
        for s in shards:
            if _is_local(s):
                with open(_local_path(s), "rb") as f:
                    data: bytes | memoryview = f.read()
            else:
                data = ds._buffer(s)
            ref = _upload(xrpc, data, _MIME, f"shard {shard_name(s)}")
            url = f"at://{did}/blob/{ref['ref']['$link']}"
            urls.append(url)
            refs.append(ref)
            sums[url] = hashlib.sha256(data).hexdigest()
        return ShardUploadResult(urls, refs, sums)

    def read_url(self, url: str) -> str:
        """The getBlob URL of ``at://{did}/blob/{cid}`` (on the PDS the DID document names); others unchanged.

        Raises:
            PublishError: an ``at://`` URL that is not a blob URL.
            IdentityError: the DID does not resolve.
        """
        if not url.startswith("at://"):
            return url
        did, cid = parse_blob_url(url)
        return blob_url(self.client.xrpc.pds_of(did), did, cid)

    def supports_streaming(self) -> bool:
        """Blobs stream over HTTP: ``True``."""
        return True

    def create_source(self, urls: list[str]) -> BlobSource:
        """A :class:`~atdata_torch.sources.BlobSource` reading these ``at://`` blob URLs (checksums checked when
        ``urls`` is a :class:`ShardUploadResult`).

        Raises:
            PublishError: a URL is not ``at://<did>/blob/<cid>``.
        """
        refs = [dict(zip(("did", "cid"), parse_blob_url(u), strict=True)) for u in urls]
        dids = {r["did"] for r in refs}
        pds = self.client.xrpc.pds_of(dids.pop()) if len(dids) == 1 else None
        sums = getattr(urls, "checksums", None) or None
        return BlobSource(refs, pds_endpoint=pds, checksums=sums)


def _checksum(c: Any) -> dict[str, str]:
    if isinstance(c, str):
        return {"algorithm": "sha256", "digest": c}
    if isinstance(c, Mapping):
        return {"algorithm": str(c["algorithm"]), "digest": str(c["digest"])}
    return {"algorithm": str(c.algorithm), "digest": str(c.digest)}


def blob_entry_record(
    blob_refs: list[dict[str, Any]],
    schema_uri: str,
    *,
    name: str,
    checksums: list[Any] | None = None,
    metadata_schema_ref: str | None = None,
    content_metadata: Mapping[str, Any] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    """A ``storageBlobs`` entry record over uploaded blob refs (see ``DatasetPublisher.publish_with_blob_refs``).

    Raises:
        PublishError: ``checksums`` and ``blob_refs`` differ in length, or a ref is not a blob.
    """
    if isinstance(blob_refs, ShardUploadResult):  # the URLs themselves: use the refs and sums they carry
        if checksums is None:
            checksums = [blob_refs.checksums.get(u) or "" for u in blob_refs]
        blob_refs = blob_refs.blob_refs
    if checksums and len(checksums) != len(blob_refs):
        raise PublishError(
            f"publish_with_blob_refs: {len(checksums)} checksums for {len(blob_refs)} blob refs; pass one per ref"
        )
    blobs = []
    for i, ref in enumerate(blob_refs):
        if not (isinstance(ref, Mapping) and isinstance(ref.get("ref"), Mapping) and "$link" in ref["ref"]):
            raise PublishError(
                f"publish_with_blob_refs: blob_refs[{i}] is not a blob ref ({{'$type': 'blob', 'ref': {{'$link': "
                f"cid}}, 'mimeType', 'size'}}, as Atmosphere.upload_blob returns); got {ref!r:.80}"
            )
        c = _checksum(checksums[i]) if checksums and checksums[i] else dict(NO_CHECKSUM)
        blobs.append({"blob": dict(ref), "checksum": c})
    storage = {"$type": f"{COLLECTIONS['entry'].rsplit('.', 1)[0]}.storageBlobs", "blobs": blobs}
    rec = entry_record(name=name, schema_uri=schema_uri, storage=storage, **meta)
    if metadata_schema_ref:
        rec["metadataSchemaRef"] = metadata_schema_ref
    if content_metadata:
        rec["contentMetadata"] = dict(content_metadata)
    rec["createdAt"] = rec.get("createdAt") or now_iso()
    return rec
