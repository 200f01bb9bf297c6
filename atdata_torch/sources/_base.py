"""The DataSource protocol and the scheme registry."""

from __future__ import annotations

import importlib
import os
from typing import IO, Protocol, runtime_checkable

from .._shards import expand_urls

Buffer = bytes | memoryview


@runtime_checkable
class DataSource(Protocol):
    """What a :class:`~atdata_torch.Dataset` reads shards through (compatible with the original atdata's).

    Required: :meth:`list_shards` and :meth:`open_shard`. Sources that can do better implement the optional
    methods of :class:`ShardSource` (random access, sidecars).
    """

    def list_shards(self) -> list[str]:
        """The shard identifiers (paths or URLs), in dataset order."""
        ...

    def open_shard(self, shard: str) -> IO[bytes]:
        """A binary stream of one shard's bytes."""
        ...


class ShardSource:
    """Base class for sources: sequential streams, plus optional random access and sidecars.

    Subclasses implement :meth:`list_shards` and :meth:`open_shard`; :meth:`buffer` returns the whole shard
    as a random-access buffer (mmap for local files) when the source can, and :meth:`read_sidecar` the bytes of
    ``<shard>.idx.json`` when it exists.
    """

    def list_shards(self) -> list[str]:
        """The shard identifiers, in dataset order."""
        raise NotImplementedError

    @property
    def shards(self) -> list[str]:
        """Alias of :meth:`list_shards` (the original atdata's name)."""
        return self.list_shards()

    def open_shard(self, shard: str) -> IO[bytes]:
        """A binary stream of one shard."""
        raise NotImplementedError

    def buffer(self, shard: str) -> Buffer | None:
        """The whole shard as a random-access buffer, or ``None`` when only streaming is possible."""
        return None

    def read_sidecar(self, shard: str) -> bytes | None:
        """The bytes of the shard's index sidecar, or ``None`` if there is none."""
        return None

    def __len__(self) -> int:
        return len(self.list_shards())


_REGISTRY: dict[str, str] = {
    "file": "atdata_torch.sources.local:LocalSource",
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
    assert isinstance(obj, type)
    return obj


def _scheme(url: str) -> str:
    if "://" in url:
        return url.split("://", 1)[0].lower()
    if ":" in url and not os.path.splitdrive(url)[0] and not url.startswith(("/", ".")):
        head = url.split(":", 1)[0]
        if head.isalpha() and len(head) > 1:
            return head.lower()  # pipe:, gs:, ...
    return "file"


def source_for_urls(urls: list[str]) -> DataSource:
    """The source serving a list of shard URLs (all must share one scheme)."""
    if not urls:
        from .memory import MemorySource

        return MemorySource({})
    schemes = {_scheme(u) for u in urls}
    if len(schemes) > 1:
        from .url import URLSource

        return URLSource(urls)
    scheme = schemes.pop()
    target = _REGISTRY.get(scheme)
    if target is None:
        from .url import URLSource

        return URLSource(urls)
    cls = _load(target)
    return cls.from_urls(urls)  # type: ignore[attr-defined, no-any-return]


def resolve_source(spec: str | list[str] | DataSource) -> DataSource:
    """Turn what a user passed to ``Dataset(...)`` into a source: brace-expanded URL(s), or a source as is."""
    if isinstance(spec, (str, os.PathLike)):
        return source_for_urls(expand_urls(os.fspath(spec)))
    if isinstance(spec, (list, tuple)):
        urls: list[str] = []
        for s in spec:
            urls.extend(expand_urls(os.fspath(s)))
        return source_for_urls(urls)
    if isinstance(spec, DataSource):
        return spec
    raise TypeError(f"a Dataset needs a URL string, a list of URLs, or a DataSource; got {type(spec).__name__}")
