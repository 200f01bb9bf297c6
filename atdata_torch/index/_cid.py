"""Entry ids: the CID the original atdata computes, so that the same dataset gets the same id in both.

A CIDv1 (multicodec ``dag-cbor`` 0x71, multihash ``sha2-256`` 0x12, 32-byte digest) in base32 multibase (so it
starts ``bafyrei``) over the DAG-CBOR encoding of ``{"schema_ref": <str>, "data_urls": [<str>, ...]}``. Metadata,
names and descriptions do not enter the id.

Example:
    >>> entry_cid("atdata://local/schema/TextSample@1.0.0", ["s3://bucket/text-{000000..000009}.tar"])
    'bafyreigi5atcdjodye4556dmt37fifkpetlh3ca5hy25mtf6sqljdbjpwa'
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import libipld

__all__ = ["cid_of", "entry_cid"]

_CID_PREFIX = bytes([0x01, 0x71, 0x12, 0x20])  # CIDv1, dag-cbor, sha2-256, 32 bytes


def cid_of(data: object) -> str:
    """The CIDv1 (dag-cbor, sha256, base32) of any DAG-CBOR-encodable value.

    Raises:
        ValueError: when ``data`` cannot be encoded as DAG-CBOR (floats that are NaN, non-str keys, ...).

    Example:
        >>> cid_of({"a": 1}).startswith("bafyrei")
        True
    """
    try:
        encoded = libipld.encode_dag_cbor(data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"cannot encode {type(data).__name__} as DAG-CBOR: {exc}") from exc
    return str(libipld.encode_cid(_CID_PREFIX + hashlib.sha256(encoded).digest()))


def entry_cid(schema_ref: str, data_urls: Sequence[str]) -> str:
    """The id of an index entry: the CID of ``{"schema_ref": schema_ref, "data_urls": list(data_urls)}``.

    Example:
        >>> entry_cid("atdata://local/schema/A@1.0.0", ["/d/a.tar"]).startswith("bafyrei")
        True
    """
    return cid_of({"schema_ref": str(schema_ref), "data_urls": [str(u) for u in data_urls]})
