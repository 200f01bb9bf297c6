"""The original atdata's ``Dataset`` surface, as a mixin of :class:`~atdata_torch.Dataset`.

``url`` / ``metadata_url`` and the lazily fetched ``metadata``, ``shards``, ``schema``, ``column_names``,
``batch_type``, ``content_metadata``, ``describe()`` (the original's summary; ``summary()`` is ours),
``select(indices)``, ``to_pandas()`` / ``to_dict()`` / ``to_parquet()`` (see ``_tabular``) and
``process_shards()``. They behave as the original's do, except where the migration guide says otherwise.

Example:
    >>> shards_to_url(["/d/train-000000.tar", "/d/train-000001.tar"])
    '/d/train-00000{0,1}.tar'
    >>> default_limits(10, None)
    (10, 3000000000.0)
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgpack

from . import _tabular
from ._batch import SampleBatch
from .errors import DecodeError, PartialFailureError, SampleIndexError, SchemaError, ShardNotFoundError, SourceError
from .schema import DictSample, PackableSample

__all__ = ["DatasetCompat", "check_content_metadata", "default_limits", "shards_to_url"]

T = TypeVar("T")
_LOG = logging.getLogger("atdata_torch")

# The original's webdataset.ShardWriter defaults, for the limit not given.
DEFAULT_MAXCOUNT = 100_000
DEFAULT_MAXSIZE = 3e9


def default_limits(maxcount: int | None, maxsize: float | None) -> tuple[int | None, float | None]:
    """``(maxcount, maxsize)`` with the original's default for the one not given when the other is."""
    if maxcount is None and maxsize is None:
        return None, None
    return (DEFAULT_MAXCOUNT if maxcount is None else maxcount), (DEFAULT_MAXSIZE if maxsize is None else maxsize)


def check_content_metadata(value: Any) -> None:
    """``content_metadata`` must be ``None``, a sample (``@packable`` or DictSample) or a dict.

    Raises:
        SchemaError: otherwise (a ``TypeError``, as the original atdata raised).
    """
    if value is not None and not isinstance(value, (dict, PackableSample, DictSample)):
        raise SchemaError(
            f"content_metadata must be a @packable sample, a DictSample or a dict, got {type(value).__name__}; "
            "wrap the value in a dict: content_metadata={'value': ...}"
        )


def shards_to_url(shards: list[str]) -> str:
    """One brace pattern for a list of shards (the original's ``_shards_to_wds_url``): the common prefix and
    suffix around ``{a,b,...}``. Where the middles are not all non-empty, every name goes inside the braces (the
    original joined them with spaces, which a brace expander does not read back)."""
    if not shards:
        return ""
    if len(shards) == 1:
        return shards[0]
    prefix = _common_start(shards)
    suffix = _common_start([s[::-1] for s in shards])[::-1]
    shortest = min(len(s) for s in shards)
    if len(prefix) + len(suffix) > shortest:
        suffix = suffix[len(prefix) + len(suffix) - shortest :]
    middles = [s[len(prefix) : len(s) - len(suffix)] for s in shards]
    if all(middles):
        return f"{prefix}{{{','.join(middles)}}}{suffix}"
    return "{" + ",".join(shards) + "}"


def _common_start(strings: list[str]) -> str:
    """The longest common start of ``strings``, character by character (not by path component)."""
    first, last = min(strings), max(strings)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def fetch_metadata(url: str, options: dict[str, Any], shards: list[str]) -> dict[str, Any]:
    """The msgpack map at ``url``, read through this package's sources (local path, ``file://``, ``http(s)://``,
    ``s3://``). The dataset's source options (``headers=``, ``endpoint=``...) apply when the URL has the scheme
    of the dataset's shards.

    Raises:
        SourceError: when it cannot be read. DecodeError: when it is not one msgpack map.
    """
    from .sources import source_for_urls

    same = bool(shards) and _scheme(shards[0]) == _scheme(url)
    source = source_for_urls([url], **(options if same else {}))
    try:
        with source.open_shard(source.list_shards()[0]) as f:
            data = f.read()
    except SourceError as exc:
        raise type(exc)(f"cannot read the dataset metadata (metadata_url={url!r}): {exc.message}", shard=url) from exc
    try:
        value = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise DecodeError(
            f"the dataset metadata at {url!r} is not msgpack ({type(exc).__name__}: {exc}); metadata_url= must "
            "point at one msgpack-encoded map",
            shard=url,
        ) from exc
    if not isinstance(value, dict):
        raise DecodeError(
            f"the dataset metadata at {url!r} is a msgpack {type(value).__name__}, expected a map", shard=url
        )
    return value


class DatasetCompat(Generic[T]):
    """The original atdata's members of ``Dataset`` that our core does not need (see the module docstring)."""

    metadata_url: str | None = None
    _url: str | None = None
    _metadata: dict[str, Any] | None = None
    _content_metadata: Any = None
    _source_options: dict[str, Any] | None = None

    def summary(self: Any) -> dict[str, Any]:
        """A summary: sample type and fields, shards, samples and bytes (when known without reading data).

        ``describe()`` gives the original atdata's form (field names and types, the shard list, url, metadata).
        """
        from .schema import schema_id

        st = self.sample_type
        fields: list[dict[str, Any]] | None = None
        if isinstance(st, type) and issubclass(st, PackableSample):
            fields = [f.describe() for f in st.__atdata_fields__]
        shards = self.list_shards()
        sidecars = [self._sidecar(s) for s in shards]
        known = all(s is not None for s in sidecars)
        return {
            "sample_type": getattr(st, "__name__", str(st)),
            "schema_id": schema_id(st) if isinstance(st, type) else None,
            "fields": fields,
            "shards": len(shards),
            "samples": sum(s.count for s in sidecars if s is not None) if known else None,
            "bytes": sum(s.size for s in sidecars if s is not None) if known else None,
            "stages": [kind for kind, _ in self._stages],
            "source": repr(self.source),
        }

    def _compat_init(self, source: Any, metadata_url: str | None, url: str | None, options: dict[str, Any]) -> Any:
        """Record ``url`` / ``metadata_url``; returns the source spec to resolve (``url=`` is the original's
        older name of ``source``)."""
        if source is not None and url is not None:
            raise TypeError("Dataset() got both source and url=; pass one (url= is the older name of source)")
        spec = url if source is None else source
        if spec is None:
            raise TypeError("Dataset() missing required argument: 'source' or 'url'")
        if isinstance(spec, (str, os.PathLike)):
            self._url = os.fspath(spec)
        elif isinstance(spec, (list, tuple)) and all(isinstance(s, (str, os.PathLike)) for s in spec):
            self._url = shards_to_url([os.fspath(s) for s in spec])
        if metadata_url is not None and not isinstance(metadata_url, str):
            raise TypeError(f"metadata_url= takes a URL string, got {type(metadata_url).__name__}")
        self.metadata_url = metadata_url
        self._source_options = dict(options) if metadata_url is not None else None
        return spec

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def url(self) -> str:
        """The URL the dataset was made from (a list of shards: one brace pattern; a source: its first shard)."""
        if self._url is not None:
            return self._url
        ds: Any = self
        shards = ds.list_shards()
        return str(shards[0]) if shards else ""

    @property
    def shards(self) -> Any:
        """An iterator over the shard identifiers (the original's; :meth:`list_shards` gives the list)."""
        ds: Any = self
        return iter(ds.list_shards())

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The msgpack map at ``metadata_url``, fetched on first access and cached; ``None`` without one."""
        if self.metadata_url is None:
            return None
        if self._metadata is None:
            ds: Any = self
            self._metadata = fetch_metadata(self.metadata_url, self._source_options or {}, ds.list_shards())
        return self._metadata

    @property
    def content_metadata(self) -> Any:
        """Dataset-level content metadata given to ``write_samples(..., content_metadata=)`` (or set here)."""
        return self._content_metadata

    @content_metadata.setter
    def content_metadata(self, value: Any) -> None:
        check_content_metadata(value)
        self._content_metadata = value

    @property
    def schema(self) -> dict[str, Any]:
        """``{field name: annotation}`` of the sample type (``{"_data": dict}`` for DictSample, as the original).

        Annotations are resolved (``int``, not the string ``"int"`` that ``from __future__ import annotations``
        leaves, which the original returned)."""
        ds: Any = self
        st = ds.sample_type
        if st is DictSample:
            return {"_data": dict}
        if isinstance(st, type) and dataclasses.is_dataclass(st):
            try:
                hints = typing.get_type_hints(st)
            except Exception:  # a name only the class's defining scope knew: the annotations as written
                hints = {}
            return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(st)}
        return {}

    @property
    def column_names(self) -> list[str]:
        """The field names of the sample type (``[]`` for DictSample, whose fields are known per sample)."""
        ds: Any = self
        st = ds.sample_type
        if isinstance(st, type) and dataclasses.is_dataclass(st):
            return [f.name for f in dataclasses.fields(st)]
        return []

    @property
    def batch_type(self) -> Any:
        """``SampleBatch[T]``: what ``ordered(batch_size=n)`` yields."""
        ds: Any = self
        generic: Any = SampleBatch
        return generic[ds.sample_type]

    def describe(self) -> dict[str, Any]:
        """The original atdata's summary: ``sample_type`` (name), ``fields`` (:attr:`schema`), ``num_shards``,
        ``shards`` (the list), ``url`` and ``metadata``. Our richer one (schema id, sample and byte counts from the
        sidecars, stages) is :meth:`~atdata_torch.Dataset.summary`."""
        ds: Any = self
        shards = list(ds.list_shards())
        st = ds.sample_type
        return {
            "sample_type": getattr(st, "__name__", str(st)),
            "fields": self.schema,
            "num_shards": len(shards),
            "shards": shards,
            "url": self.url,
            "metadata": self.metadata,
        }

    # ------------------------------------------------------------------------------------------------ selection
    def select(self, indices: Sequence[int]) -> list[T]:
        """The samples at these positions (in the dataset's order), in the order asked, repeats included.

        Without a ``filter()`` the positions are found in the shard indexes and only those samples are read;
        after one, the dataset is read in order up to the last position asked (as the original does).

        Raises:
            SampleIndexError: for a position the dataset does not have (an ``IndexError``; negative positions
                count as missing, as in the original).
        """
        ds: Any = self
        wanted = [_position(i) for i in indices]
        if not wanted:
            return []
        found = _select_scan(ds, wanted) if ds.has_filter else _select_indexed(ds, wanted)
        missing = [i for i in wanted if i not in found]
        if missing:
            total = ds.sample_count() if not ds.has_filter else sum(1 for _ in ds.ordered())
            raise SampleIndexError(
                f"select(): positions {missing[:10]} are not in the dataset, which has {total} samples; positions "
                f"run from 0 to {total - 1}"
            )
        return [found[i] for i in wanted]

    # ------------------------------------------------------------------------------------------------ tables
    def to_pandas(self, limit: int | None = None) -> Any:
        """A ``pandas.DataFrame`` of the first ``limit`` samples (all of them for ``None``: loads them into memory).

        Needs the ``arrow`` extra.
        """
        return _tabular.to_pandas(self._samples(limit))

    def to_dict(self, limit: int | None = None) -> dict[str, list[Any]]:
        """``{field: [values...]}`` of the first ``limit`` samples (all for ``None``); ``{}`` for none."""
        return _tabular.columns(list(self._samples(limit)))

    def to_parquet(
        self,
        path: str | os.PathLike[str],
        sample_map: Callable[[Any], dict[str, Any]] | None = None,
        maxcount: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Write the samples to parquet (``arrow`` extra): one file, or with ``maxcount`` files of at most that
        many rows named ``{stem}-000000.parquet``, ... as the original. ``sample_map``: sample -> dict (default:
        the sample's fields, DictSample included); ``**kwargs`` go to ``DataFrame.to_parquet``. Returns the paths.
        """
        ds: Any = self
        return _tabular.to_parquet(ds.ordered(), path, sample_map, maxcount, **kwargs)

    def _samples(self, limit: int | None) -> Any:
        ds: Any = self
        if limit is None:
            return ds.ordered()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit= takes a non-negative int or None, got {limit!r}")
        return itertools.islice(ds.ordered(), limit)

    # ------------------------------------------------------------------------------------------------ shards
    def process_shards(
        self,
        fn: Callable[[list[T]], Any],
        *,
        shards: list[str] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        on_shard_error: Callable[[str, Exception], None] | None = None,
    ) -> dict[str, Any]:
        """Call ``fn(samples of one shard)`` for each shard; returns ``{shard: result}``.

        Each shard is read with this dataset's type and ``map()`` / ``filter()`` / lens stages. ``shards``: only
        these (say ``e.failed_shards`` of an earlier failure). ``checkpoint``: a text file of the shards done, one
        per line: they are skipped, each new success is appended, and the file is removed once all succeed.
        ``on_shard_error(shard, exc)`` is called for each failure.

        Raises:
            PartialFailureError: when any shard failed (after all were tried), with ``.succeeded_shards``,
                ``.failed_shards``, ``.errors`` and ``.results``.

        Example:
            >>> # counts = ds.process_shards(len)
        """
        ds: Any = self
        known = ds.list_shards()
        todo = list(known) if shards is None else list(shards)
        ck = Path(checkpoint) if checkpoint is not None else None
        if ck is not None and ck.exists():
            done = set(ck.read_text(encoding="utf-8").splitlines())
            todo = [s for s in todo if s not in done]
            _LOG.info("process_shards: checkpoint %s: %d shards already done", ck, len(done))
        results: dict[str, Any] = {}
        failed: list[str] = []
        errors: dict[str, Exception] = {}
        for shard in todo:
            try:
                results[shard] = fn(list(_one_shard(ds, shard, known)))
            except Exception as exc:
                failed.append(shard)
                errors[shard] = exc
                _LOG.warning("process_shards: shard %s failed: %s", shard, exc)
                if on_shard_error is not None:
                    on_shard_error(shard, exc)
                continue
            if ck is not None:
                with ck.open("a", encoding="utf-8") as f:
                    f.write(shard + "\n")
        if failed:
            raise PartialFailureError(list(results), failed, errors, results)
        if ck is not None and ck.exists():
            ck.unlink()
        return results


def _position(i: Any) -> int:
    if isinstance(i, bool):
        raise TypeError(f"select() takes int positions, got {i!r}")
    try:
        return i.__index__()  # type: ignore[no-any-return]
    except AttributeError:
        raise TypeError(f"select() takes int positions, got {type(i).__name__} {i!r}") from None


def _select_scan(ds: Any, wanted: list[int]) -> dict[int, Any]:
    targets, last = set(wanted), max(wanted)
    found: dict[int, Any] = {}
    if last < 0:
        return found
    for n, sample in enumerate(ds.ordered()):
        if n in targets:
            found[n] = sample
        if n >= last:
            break
    return found


def _select_indexed(ds: Any, wanted: list[int]) -> dict[int, Any]:
    """The samples at ``wanted`` through random access (one read per sample, nearby ones coalesced); positions
    outside ``0 .. len - 1`` are left out (negative ones count as missing, as in the original)."""
    from ._random_access import random_access

    ra = random_access(ds)
    valid = sorted({pos for pos in wanted if 0 <= pos < len(ra)})
    return dict(zip(valid, ra.get_many(valid), strict=True)) if valid else {}


def _one_shard(ds: Any, shard: str, known: list[str]) -> Any:
    """One shard of ``ds`` as a dataset of its own (same source, type, stages and sample range)."""
    if shard not in known:
        raise ShardNotFoundError(
            f"process_shards(): {shard!r} is not one of this dataset's {len(known)} shards; pass shards= from "
            "ds.list_shards() (or from an earlier PartialFailureError's .failed_shards)",
            shard=shard,
        )
    one = ds._derive(ds.sample_type, ds._stages)
    one._shards = [shard]
    return one.ordered()
