"""What every ``science.alt.dataset.*`` record kind shares: the collection NSIDs (both namespaces), at-uris,
timestamps and the no-floats check.

Example:
    >>> kind_of(COLLECTIONS["label"]), str(AtUri("did:plc:x", COLLECTIONS["entry"], "3kx"))
    ('label', 'at://did:plc:x/science.alt.dataset.entry/3kx')
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PublishError

__all__ = [
    "COLLECTIONS",
    "LEGACY_COLLECTIONS",
    "LEGACY_NS",
    "NDARRAY_REF",
    "NO_CHECKSUM",
    "NS",
    "AtUri",
    "check_no_floats",
    "kind_of",
    "now_iso",
]

NS = "science.alt.dataset"
LEGACY_NS = "ac.foundation.dataset"
COLLECTIONS = {"schema": f"{NS}.schema", "entry": f"{NS}.entry", "label": f"{NS}.label", "lens": f"{NS}.lens"}
#: The older namespace; its dataset entries were called ``record``.
LEGACY_COLLECTIONS = {
    "schema": f"{LEGACY_NS}.schema",
    "entry": f"{LEGACY_NS}.record",
    "label": f"{LEGACY_NS}.label",
    "lens": f"{LEGACY_NS}.lens",
}
NDARRAY_REF = "https://alt.science/schemas/atdata-ndarray-bytes/1.0.0#/$defs/ndarray"
NO_CHECKSUM = {"algorithm": "none", "digest": ""}


def now_iso() -> str:
    """The current UTC time as an RFC 3339 string, as records carry it.

    Example:
        >>> now_iso().endswith("Z")
        True
    """
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def kind_of(collection: str) -> str | None:
    """``"schema"``, ``"entry"``, ``"label"`` or ``"lens"`` for a collection NSID of either namespace.

    Example:
        >>> kind_of("ac.foundation.dataset.record"), kind_of("app.bsky.feed.post")
        ('entry', None)
    """
    for table in (COLLECTIONS, LEGACY_COLLECTIONS):
        for kind, nsid in table.items():
            if nsid == collection:
                return kind
    return None


# ------------------------------------------------------------------------------------------------------ at-uris
_AT_URI = re.compile(r"^at://(?P<repo>[^/?#]+)(?:/(?P<collection>[^/?#]+)(?:/(?P<rkey>[^/?#]+))?)?/?$")


@dataclass(frozen=True)
class AtUri:
    """``at://<repo>/<collection>/<rkey>``; ``repo`` is a DID or a handle.

    Example:
        >>> u = AtUri.parse("at://did:plc:abc/science.alt.dataset.entry/3kx")
        >>> u.repo, u.collection, u.rkey, str(u)
        ('did:plc:abc', 'science.alt.dataset.entry', '3kx', 'at://did:plc:abc/science.alt.dataset.entry/3kx')
    """

    repo: str
    collection: str | None = None
    rkey: str | None = None

    @classmethod
    def parse(cls, uri: str) -> AtUri:
        """Parse an at-uri.

        Raises:
            ValueError: ``uri`` is not ``at://repo[/collection[/rkey]]``.
        """
        m = _AT_URI.match(uri.strip())
        if not m:
            raise ValueError(f"not an at:// URI: {uri!r} (expected at://<did or handle>/<collection>/<rkey>)")
        return cls(m["repo"], m["collection"], m["rkey"])

    def __str__(self) -> str:
        return "/".join(p for p in (f"at://{self.repo}", self.collection, self.rkey) if p)

    @property
    def authority(self) -> str:
        """The original atdata's name for :attr:`repo` (the DID or handle)."""
        return self.repo


# ------------------------------------------------------------------------------------------------------ checks
def check_no_floats(value: Any, where: str = "record") -> None:
    """Refuse floats anywhere in a record (a PDS rejects them), naming the path and the fix.

    Raises:
        PublishError: a float was found.

    Example:
        >>> check_no_floats({"a": [1, "2.5"]})
        >>> check_no_floats({"metadata": {"lr": 0.1}})
        Traceback (most recent call last):
        ...
        atdata_torch.errors.PublishError: record.metadata.lr is the float 0.1; ...
    """
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float):
        raise PublishError(
            f"{where} is the float {value!r}; AT Protocol records cannot hold floats: store it as a string "
            f'("{value!r}") or an integer (e.g. scaled)'
        )
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_no_floats(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_no_floats(v, f"{where}[{i}]")
