"""``science.alt.dataset.lens`` records: code references (repository, commit, ``module:qualname``), never code.

Example:
    >>> ref = CodeRef(repository="https://github.com/me/pkg", commit="a" * 40, path="pkg.lenses:gray")
    >>> parse_lens("at://did:plc:x/science.alt.dataset.lens/3kx",
    ...            lens_record(name="gray", source_schema="at://a", target_schema="at://b", getter=ref,
    ...                        putter=ref)).getter == ref
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PublishError
from ._lex_base import COLLECTIONS, now_iso

__all__ = ["CodeRef", "LensRecord", "lens_record", "parse_lens"]


@dataclass(frozen=True)
class CodeRef:
    """Where a lens's code lives: a repository, an exact commit, and ``module:qualname`` inside it.

    Example:
        >>> CodeRef(repository="https://github.com/me/pkg", commit="a" * 40, path="pkg.lenses:gray").module
        'pkg.lenses'
    """

    repository: str
    commit: str
    path: str
    branch: str | None = None
    language: str = "python"

    def __post_init__(self) -> None:
        if ":" not in self.path:
            raise ValueError(f"CodeRef.path must be 'module:qualname' (e.g. 'pkg.lenses:gray'), got {self.path!r}")

    @property
    def module(self) -> str:
        """The module part of ``path``."""
        return self.path.split(":", 1)[0]

    @property
    def qualname(self) -> str:
        """The object part of ``path``."""
        return self.path.split(":", 1)[1]

    def to_record(self) -> dict[str, str]:
        """The record's ``codeReference`` object."""
        out = {"repository": self.repository, "commit": self.commit, "path": self.path}
        if self.branch:
            out["branch"] = self.branch
        if self.language:
            out["language"] = self.language
        return out

    @classmethod
    def from_record(cls, value: Mapping[str, Any]) -> CodeRef:
        """Read a ``codeReference`` object."""
        try:
            return cls(
                repository=str(value["repository"]),
                commit=str(value["commit"]),
                path=str(value["path"]),
                branch=value.get("branch"),
                language=str(value.get("language") or "python"),
            )
        except (KeyError, TypeError) as exc:
            raise PublishError(f"malformed code reference {dict(value)!r}: missing {exc}") from exc


def lens_record(
    *,
    name: str,
    source_schema: str,
    target_schema: str,
    getter: CodeRef,
    putter: CodeRef,
    description: str | None = None,
) -> dict[str, Any]:
    """A ``science.alt.dataset.lens`` record (code references only: a record never carries code)."""
    rec: dict[str, Any] = {
        "$type": COLLECTIONS["lens"],
        "name": name,
        "sourceSchema": source_schema,
        "targetSchema": target_schema,
        "getterCode": getter.to_record(),
        "putterCode": putter.to_record(),
        "createdAt": now_iso(),
        "language": getter.language,
    }
    if description:
        rec["description"] = description
    return rec


@dataclass(frozen=True)
class LensRecord:
    """A lens record read back: data, never code. :meth:`Atmosphere.load_lens` turns it into a
    :class:`~atdata_torch.Lens` only for code you installed and allowed."""

    uri: str
    name: str
    source_schema: str
    target_schema: str
    getter: CodeRef
    putter: CodeRef
    description: str | None = None
    created_at: str | None = None


def parse_lens(uri: str, value: Mapping[str, Any]) -> LensRecord:
    """Read a lens record (either namespace)."""
    return LensRecord(
        uri=uri,
        name=str(value.get("name", "")),
        source_schema=str(value.get("sourceSchema", "")),
        target_schema=str(value.get("targetSchema", "")),
        getter=CodeRef.from_record(value.get("getterCode") or {}),
        putter=CodeRef.from_record(value.get("putterCode") or value.get("getterCode") or {}),
        description=value.get("description"),
        created_at=value.get("createdAt"),
    )
