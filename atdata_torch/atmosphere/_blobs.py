"""Shards stored as PDS blobs, read through ``com.atproto.sync.getBlob`` (no login needed).

A :class:`BlobSource` is an :class:`~atdata_torch.sources.HTTPSource` (retries, resume, read-ahead, the shard
cache) that asks for the identity encoding (a PDS gzips blobs on the fly otherwise, about 6x slower), checks every
blob against the sha256 its record promises, and reads index sidecars from the blobs the record names (a getBlob URL
has no ``.idx.json`` neighbour).

Example:
    >>> src = BlobSource(["http://pds/xrpc/com.atproto.sync.getBlob?did=did:plc:x&cid=bafkreia"],
    ...                  checksums={}, index_urls={})
    >>> src
    BlobSource(1 blobs, first='http://pds/xrpc/com.atproto.sync.getBlob...')
"""

from __future__ import annotations

from typing import Any

from ..sources.http import HTTPSource

__all__ = ["BlobSource"]


class BlobSource(HTTPSource):
    """PDS blobs as shards.

    Args:
        urls: getBlob URLs, one per shard.
        checksums: ``{url: sha256}`` from the record; a mismatch raises
            :class:`~atdata_torch.errors.ChecksumError`.
        index_urls: ``{url: getBlob URL of its index sidecar}`` (an atdata_torch extension of the record).
        **kwargs: :class:`~atdata_torch.sources.HTTPSource` options (``cache``, ``retries``, ``headers``, ...).
    """

    def __init__(
        self,
        urls: list[str],
        *,
        checksums: dict[str, str] | None = None,
        index_urls: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        headers = {"Accept-Encoding": "identity", **dict(kwargs.pop("headers", None) or {})}
        super().__init__(urls, headers=headers, checksums=checksums, **kwargs)
        self.index_urls = dict(index_urls or {})

    def _sidecar_url(self, shard: str) -> str | None:
        """The index blob the record names for this shard; ``None`` (no request) when it names none."""
        return self.index_urls.get(shard)

    def __repr__(self) -> str:
        shards = self.list_shards()
        first = f", first={self._display(shards[0])!r}" if shards else ""
        return f"BlobSource({len(shards)} blobs{first})"
