"""The scheme registry: which source serves a URL, and what a user passes to ``Dataset(...)`` turned into one."""

from __future__ import annotations

import importlib
import os
from typing import Any

from .._shards import expand_urls
from ._base import ConcatSource, DataSource
from .cache import ShardCache
from .memory import MemorySource
from .url import URLSource

__all__ = ["register_source", "resolve_source", "source_for_urls"]


_REGISTRY: dict[str, str] = {
    "file": "atdata_torch.sources.local:LocalSource",
    "http": "atdata_torch.sources.http:HTTPSource",
    "https": "atdata_torch.sources.http:HTTPSource",
    "s3": "atdata_torch.sources.s3:S3Source",
}


def register_source(scheme: str, target: str | type) -> None:
    """Register the source class for a URL scheme (``"s3"``), as a class or a lazy ``"module:Class"`` string.

    The class must have a classmethod ``from_urls(urls: list[str]) -> DataSource``.
    """
    _REGISTRY[scheme.lower()] = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def _load(target: str) -> type:
    module, _, name = target.partition(":")
    obj: object = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise TypeError(f"source registry entry {target!r} is not a class")
    return obj


def _scheme(url: str) -> str:
    if "://" in url:
        return url.split("://", 1)[0].lower()
    if ":" in url and not os.path.splitdrive(url)[0] and not url.startswith(("/", ".")):
        head = url.split(":", 1)[0]
        if head.isalpha() and len(head) > 1:
            return head.lower()  # pipe:, gs:, ...
    return "file"


def options_for(scheme: str, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for the source of ``scheme`` from a user's ``Dataset(...)`` options: ``cache_dir=`` and
    ``cache_max_bytes=`` become a :class:`~atdata_torch.sources.cache.ShardCache` for the remote sources.

    Example:
        >>> options_for("file", {"checksums": True})
        {'checksums': True}
    """
    opts = dict(options)
    cache_dir = opts.pop("cache_dir", None)
    cache_max = opts.pop("cache_max_bytes", None)
    if scheme == "file":
        return opts  # LocalSource.from_urls says which of them it takes
    if cache_dir is not None:
        opts["cache"] = ShardCache(cache_dir, max_bytes=cache_max)
    return opts


def source_for_urls(urls: list[str], **options: Any) -> DataSource:
    """The source serving a list of shard URLs. ``options`` go to the remote sources (``cache_dir=``,
    ``cache_max_bytes=``, ``headers=``, ``endpoint=``, ``retries=``...). Mixed schemes give a :class:`ConcatSource`.
    """
    if not urls:
        return MemorySource({})
    schemes = list(dict.fromkeys(_scheme(u) for u in urls))
    if len(schemes) > 1:
        # Local files take no options: the remote ones (headers=, retries=...) are for the remote part.
        return ConcatSource(
            [
                source_for_urls(
                    [u for u in urls if _scheme(u) == sc],
                    **({k: v for k, v in options.items() if k == "checksums"} if sc == "file" else options),
                )
                for sc in schemes
            ]
        )
    scheme = schemes[0]
    target = _REGISTRY.get(scheme)
    if target is None:
        return URLSource(urls)
    cls = _load(target)
    return cls.from_urls(urls, **options_for(scheme, options))  # type: ignore[attr-defined, no-any-return]


def resolve_source(spec: str | os.PathLike[str] | list[str] | DataSource, **options: Any) -> DataSource:
    """Turn what a user passed to ``Dataset(...)`` into a source: brace-expanded URL(s), or a source as is."""
    if isinstance(spec, (str, os.PathLike)):
        return source_for_urls(expand_urls(os.fspath(spec)), **options)
    if isinstance(spec, (list, tuple)):
        urls: list[str] = []
        for s in spec:
            urls.extend(expand_urls(os.fspath(s)))
        return source_for_urls(urls, **options)
    if options:
        raise TypeError(f"options {sorted(options)} are given to the source's constructor, not to Dataset()")
    if isinstance(spec, DataSource):
        return spec
    raise TypeError(f"a Dataset needs a URL string, a list of URLs, or a DataSource; got {type(spec).__name__}")
