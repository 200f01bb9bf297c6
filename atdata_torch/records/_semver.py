"""Semantic versions (``major.minor.patch``) of schema, lens and dataset records, shared by the index and the
AT Protocol client.

Example:
    >>> parse_semver("1.10.0"), latest_semver(["1.0.9", "1.0.10", "draft"])
    ((1, 10, 0), '1.0.10')
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["latest_semver", "parse_semver"]


def parse_semver(version: str) -> tuple[int, int, int] | None:
    """``"1.2.3"`` -> ``(1, 2, 3)``; ``None`` when the string is not ``major.minor.patch``.

    Example:
        >>> parse_semver("1.10.0"), parse_semver("v1")
        ((1, 10, 0), None)
    """
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def latest_semver(versions: Iterable[str]) -> str | None:
    """The highest ``major.minor.patch`` version (others are ignored), or ``None``.

    Example:
        >>> latest_semver(["1.0.9", "1.0.10", "draft"])
        '1.0.10'
    """
    best: tuple[tuple[int, int, int], str] | None = None
    for v in versions:
        key = parse_semver(v)
        if key is not None and (best is None or key > best[0]):
            best = (key, v)
    return best[1] if best else None
