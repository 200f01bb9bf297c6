"""Shard lists: brace expansion and globs."""

from __future__ import annotations

import glob
import os

import braceexpand

__all__ = ["expand_urls", "shard_name"]


def expand_urls(spec: str) -> list[str]:
    """Expand ``{000000..000009}`` / ``{a,b}`` braces (webdataset's syntax) and local globs.

    Example:
        >>> expand_urls("data-{000000..000002}.tar")
        ['data-000000.tar', 'data-000001.tar', 'data-000002.tar']
    """
    out: list[str] = []
    for url in braceexpand.braceexpand(spec):
        if "://" not in url and glob.has_magic(url):
            matches = sorted(glob.glob(url))
            out.extend(matches if matches else [url])
        else:
            out.append(url)
    return out


def shard_name(path: str, index: int) -> str:
    """The original atdata's shard naming: ``dir/train.tar`` -> ``dir/train-000003.tar``.

    Example:
        >>> shard_name("out/train.tar", 3)
        'out/train-000003.tar'
    """
    root, ext = os.path.splitext(path)
    return f"{root}-{index:06d}{ext or '.tar'}"
