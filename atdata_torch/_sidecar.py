"""The shard index sidecar: ``<shard>.idx.json`` next to each shard.

It records the sample count, each sample's key, byte offset and length (headers included), the shard's size and
sha256, and the schema id, so that readers know ``len()`` and can seek without scanning. Readers never need it:
:func:`scan` builds the same index from the shard in one pass.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ._reader import Buffer, iter_records
from .errors import ShardFormatError

SIDECAR_SUFFIX = ".idx.json"
FORMAT = "atdata-torch-shard-index"
VERSION = 1


@dataclass
class ShardIndex:
    """Where each sample of one shard lies.

    Attributes:
        count: Number of samples.
        keys: Sample keys, in tar order.
        offsets: Byte offset of each sample's first header.
        lengths: Bytes from that header to the end of the sample's last member (padding included).
        size: Size of the shard in bytes.
        sha256: Hex sha256 of the shard ("" when unknown).
        schema_id: The schema id of the samples, if known.
        payload_ext: When every sample is one member with this extension (``"msgpack"`` for atdata shards),
            the extension; ``payload_offsets`` / ``payload_sizes`` then locate each member's data, so that
            readers need not parse tar headers per sample.
    """

    count: int
    keys: list[str]
    offsets: list[int]
    lengths: list[int]
    size: int
    sha256: str = ""
    schema_id: str | None = None
    payload_ext: str | None = None
    payload_offsets: list[int] | None = None
    payload_sizes: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def slice(self, lo: int, hi: int) -> ShardIndex:
        """The index of samples ``[lo, hi)`` of this shard (same shard size and digest)."""
        lo, hi = max(0, lo), min(self.count, hi)
        hi = max(lo, hi)
        return ShardIndex(
            count=hi - lo,
            keys=self.keys[lo:hi],
            offsets=self.offsets[lo:hi],
            lengths=self.lengths[lo:hi],
            size=self.size,
            sha256=self.sha256,
            schema_id=self.schema_id,
            payload_ext=self.payload_ext,
            payload_offsets=self.payload_offsets[lo:hi] if self.payload_offsets is not None else None,
            payload_sizes=self.payload_sizes[lo:hi] if self.payload_sizes is not None else None,
            extra=self.extra,
        )

    def to_json(self) -> bytes:
        """Serialize (compact JSON)."""
        d = {"format": FORMAT, "version": VERSION, **asdict(self)}
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, shard: str) -> ShardIndex:
        """Parse a sidecar; raises :class:`ShardFormatError` naming the shard when it is not one."""
        try:
            d = json.loads(data)
            if d.get("format") != FORMAT:
                raise ValueError(f"format is {d.get('format')!r}")
            if d.get("version", 0) > VERSION:
                raise ValueError(f"version {d['version']} is newer than this atdata_torch understands")
            idx = cls(
                count=int(d["count"]),
                keys=list(d["keys"]),
                offsets=[int(x) for x in d["offsets"]],
                lengths=[int(x) for x in d["lengths"]],
                size=int(d["size"]),
                sha256=str(d.get("sha256", "")),
                schema_id=d.get("schema_id"),
                payload_ext=d.get("payload_ext"),
                payload_offsets=[int(x) for x in d["payload_offsets"]] if d.get("payload_ext") else None,
                payload_sizes=[int(x) for x in d["payload_sizes"]] if d.get("payload_ext") else None,
                extra=dict(d.get("extra", {})),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ShardFormatError(
                f"the index sidecar {shard + SIDECAR_SUFFIX!r} is not valid ({exc}); delete it or rebuild it "
                "with atd.build_index()",
                shard=shard,
            ) from exc
        if not (idx.count == len(idx.keys) == len(idx.offsets) == len(idx.lengths)) or (
            idx.payload_ext is not None
            and not (idx.count == len(idx.payload_offsets or ()) == len(idx.payload_sizes or ()))
        ):
            raise ShardFormatError(
                "the index sidecar's lists disagree with its count; rebuild it with atd.build_index()",
                shard=shard,
            )
        return idx


def scan(
    buf: Buffer,
    shard: str,
    *,
    with_sha256: bool = False,
    schema_id: str | None = None,
    salvage: list[ShardFormatError] | None = None,
) -> ShardIndex:
    """Build the index of a shard by one pass over its headers (and its bytes, for the sha256).

    With ``salvage`` (a list), a damaged shard gives the index of its intact samples before the damage, and the
    error is appended to the list instead of raised.
    """
    keys: list[str] = []
    offsets: list[int] = []
    lengths: list[int] = []
    poffs: list[int] = []
    psizes: list[int] = []
    exts: set[str] = set()
    single = True
    records = iter_records(buf, shard)
    while True:
        try:
            rec = next(records)
        except StopIteration:
            break
        except ShardFormatError as exc:
            if salvage is None:
                raise
            salvage.append(exc)
            break
        keys.append(rec.key)
        offsets.append(rec.offset)
        lengths.append(rec.length)
        if single:
            if len(rec.members) != 1:
                single = False
            else:
                ((ext, data),) = rec.members.items()
                exts.add(ext)
                poffs.append(rec.data_offset)
                psizes.append(len(data))
                single = len(exts) == 1
    uniform = single and len(exts) == 1
    return ShardIndex(
        count=len(keys),
        keys=keys,
        offsets=offsets,
        lengths=lengths,
        size=len(buf),
        sha256=hashlib.sha256(buf).hexdigest() if with_sha256 else "",
        schema_id=schema_id,
        payload_ext=exts.pop() if uniform else None,
        payload_offsets=poffs if uniform else None,
        payload_sizes=psizes if uniform else None,
    )
