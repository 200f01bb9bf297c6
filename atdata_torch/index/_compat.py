"""The original atdata's index spellings: ``Index(provider=..., path=..., redis=...)``, repositories, the default
index, content ids and ``promote_to_atmosphere``, over this package's :class:`~atdata_torch.index.Index`.

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> open_location(None, provider="sqlite", path=os.path.join(d, "lab.db")).endswith("lab.db")
    True
    >>> cid = generate_cid({"name": "test", "value": 42})
    >>> cid.startswith("bafyrei"), verify_cid(cid, {"name": "test", "value": 42}), verify_cid(cid, {})
    (True, True, False)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import libipld

from ..errors import IndexStoreError
from ._cid import cid_of
from ._records import IndexStore
from ._stores import AbstractDataStore, LocalDiskStore

if TYPE_CHECKING:
    from ._index import Index
    from ._records import IndexEntry

__all__ = [
    "Repository",
    "generate_cid",
    "generate_cid_from_bytes",
    "open_location",
    "promote_to_atmosphere",
    "verify_cid",
]

_PROVIDERS = ("sqlite", "redis", "postgres")
_UNSUPPORTED = {
    "repos": "no named repositories; open each repository as its own Index(path) / Index('redis://...')",
    "dsn": "no PostgreSQL index backend; use provider='sqlite' (path=...) or 'redis' (redis=...)",
    "auto_stubs": "no .pyi stub generation; index.get_schema_type(ref) returns a typed @packable class",
    "stub_dir": "no .pyi stub generation; index.get_schema_type(ref) returns a typed @packable class",
}


# ------------------------------------------------------------------------------------------------------ stores
def _redis_location(redis: Any, kwargs: Mapping[str, Any]) -> Any:
    """A store over a ``redis.Redis`` client, a URL as given, else a URL from ``host=``/``port=``/``db=``."""
    if isinstance(redis, (str, os.PathLike)):
        return os.fspath(redis)
    if redis is not None:  # a redis.Redis client
        from .redis import RedisStore

        return RedisStore(redis)
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"redis://{host}:{port}/{db}"


def open_location(
    location: Any, *, provider: Any = None, path: Any = None, redis: Any = None, kwargs: Mapping[str, Any] = {}
) -> Any:
    """What ``Index(...)`` opens, from our spelling (``location``) or the original's (``provider``, ``path``,
    ``redis``, Redis keyword arguments): a location string, an :class:`IndexStore`, or ``None`` (the default).

    Raises:
        IndexStoreError: ``"postgres"`` (not supported), an unknown backend name, or both spellings at once.

    Example:
        >>> open_location(None, provider="sqlite", path="/tmp/x.db"), open_location("redis", kwargs={"port": 7})
        ('/tmp/x.db', 'redis://localhost:7/0')
    """
    kwargs = dict(kwargs)
    for key, why in _UNSUPPORTED.items():
        if kwargs.pop(key, None):
            raise IndexStoreError(f"Index({key}=...): atdata_torch has {why}")
    if isinstance(location, str) and location in _PROVIDERS:
        location, provider = None, location if provider is None else provider
    if location is not None and provider is not None:
        raise IndexStoreError(f"Index({location!r}, provider={provider!r}): give the location or provider=, not both")
    if isinstance(location, Repository):
        return location.provider
    if provider is None:
        if redis is not None or kwargs:
            return _redis_location(redis, kwargs)
        return os.fspath(path) if path is not None and location is None else location
    if isinstance(provider, Repository):
        return provider.provider
    if isinstance(provider, IndexStore):
        return provider
    if provider == "sqlite":
        return os.fspath(path) if path is not None else None
    if provider == "redis":
        return _redis_location(redis, kwargs)
    if provider == "postgres":
        raise IndexStoreError(
            "Index(provider='postgres'): atdata_torch has no PostgreSQL index backend; use 'sqlite' (the default, "
            "path=...) or 'redis' (redis=... or a redis:// URL)"
        )
    raise IndexStoreError(
        f"Index(provider={provider!r}): expected 'sqlite', 'redis', an IndexStore or a Repository, got "
        f"{type(provider).__name__}"
    )


@dataclass
class Repository:
    """An index store and an optional data store (the original's ``Repository``).

    Attributes:
        provider: The index store (:class:`SqliteStore`, :class:`RedisStore`, ...).
        data_store: Where ``Index.write_samples`` / ``insert_dataset`` write shards, if anywhere.
    """

    provider: IndexStore
    data_store: AbstractDataStore | None = None


# ------------------------------------------------------------------------------------------------------ cids
def generate_cid(data: Any) -> str:
    """The CIDv1 (dag-cbor 0x71, sha2-256, base32 ``bafyrei...``) of a DAG-CBOR-encodable value.

    Raises:
        ValueError: ``data`` cannot be encoded as DAG-CBOR (a NaN, a non-str key, ...).
    """
    return cid_of(data)


def generate_cid_from_bytes(data_bytes: bytes) -> str:
    """The dag-cbor CIDv1 of bytes that are already DAG-CBOR encoded (hashed as they are)."""
    return str(libipld.encode_cid(bytes([0x01, 0x71, 0x12, 0x20]) + hashlib.sha256(data_bytes).digest()))


def verify_cid(cid: str, data: Any) -> bool:
    """Whether ``cid`` is :func:`generate_cid` of ``data``."""
    return cid == generate_cid(data)


# ------------------------------------------------------------------------------------------------------ writing
def copy_through_store(store: Any, ds: Any, name: str) -> tuple[list[str], dict[str, str]]:
    """Write ``ds`` through a data store under ``prefix=name``: ``(shard URLs, checksums)``."""
    urls = store.write_shards(ds, prefix=name)
    checks = dict(getattr(urls, "checksums", None) or {})
    return [str(u) for u in urls], checks


def write_through_store(index: Index, samples: Iterable[Any], store: Any, name: str, **kw: Any) -> IndexEntry:
    """``Index.write_samples`` into a data store that is not a :class:`LocalDiskStore`: write the shards to a
    temporary directory, hand them to ``store.write_shards`` and index what it returns."""
    from .. import write_samples

    maxcount, maxsize, progress = kw.pop("maxcount", None), kw.pop("maxsize", None), kw.pop("progress", None)
    with tempfile.TemporaryDirectory(prefix="atdata-torch-") as tmp:
        ds = write_samples(
            samples, os.path.join(tmp, "data.tar"), maxcount=maxcount or 10_000, maxsize=maxsize, progress=progress
        )
        urls, checks = copy_through_store(store, ds, name)
    meta = dict(kw.pop("metadata", None) or {})
    if checks:
        meta["checksums"] = checks
    return index.insert_dataset(urls, name=name, sample_type=ds.sample_type, metadata=meta or None, **kw)


def atmosphere_for(given: Any, default: Any, what: str) -> Any:
    """The ``Atmosphere`` to publish with: ``given``, else the index's ``atmosphere=``.

    Raises:
        IndexStoreError: neither is set.
    """
    if given is not None:
        return given
    if default is None:
        raise IndexStoreError(f"{what} needs an Atmosphere: pass to=Atmosphere.login(...) or Index(atmosphere=...)")
    return default


def store_root(store: Any) -> Any:
    """The directory of a :class:`LocalDiskStore` (``Index`` writes there directly), else ``None``."""
    return store.root if isinstance(store, LocalDiskStore) else None


# ------------------------------------------------------------------------------------------------------ promote
def promote_to_atmosphere(
    local_entry: IndexEntry,
    local_index: Index,
    atmosphere_client: Any,
    *,
    data_store: AbstractDataStore | None = None,
    name: str | None = None,
    description: str | None = None,
    tags: list[str] | None = None,
    license: str | None = None,
) -> str:
    """Publish a local entry (its schema and a dataset record) with a logged-in ``Atmosphere``; returns the
    record's at-uri.

    Deviation from the original: local shard files are uploaded as PDS blobs (the original writes their
    absolute paths into ``storageHttp``, which nobody else can read); http(s) and s3 shards are referenced.
    With ``data_store`` the shards are first copied through it and the copies are published.

    Raises:
        ValueError: the entry has no shards.
        IndexNotFoundError: the entry's schema is not in ``local_index``.
        PublishError / BlobLimitError: see ``Atmosphere.publish_dataset``.
    """
    from ..dataset import Dataset

    if not local_entry.data_urls:
        raise ValueError(f"promote_to_atmosphere: entry {local_entry.name!r} has no data URLs; nothing to publish")
    sample_type = local_index.get_schema_type(local_entry.schema_ref)
    ds: Any = Dataset(list(local_entry.data_urls), sample_type=sample_type)
    if data_store is not None:
        urls, _ = copy_through_store(data_store, ds, name or local_entry.name)
        ds = Dataset(urls, sample_type=sample_type)
    meta = local_entry.metadata or {}
    extra = {k: v for k, v in meta.items() if k not in ("checksums", "size", "tags", "license", "description")}
    uri: str = atmosphere_client.publish_dataset(
        ds,
        name=name or local_entry.name,
        description=description if description is not None else meta.get("description"),
        tags=tags if tags is not None else list(meta.get("tags") or []) or None,
        license=license if license is not None else meta.get("license"),
        metadata=extra or None,
    )
    return uri
