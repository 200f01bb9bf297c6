"""Iteration: records -> decode -> stages (lens, map, filter) -> batches, with error accounting.

:class:`Pipeline` is what ``Dataset.ordered()`` and ``Dataset.shuffled()`` return: a
``torch.utils.data.IterableDataset`` that yields samples or :class:`SampleBatch` es.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import msgpack
import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from . import _codec
from ._batch import SampleBatch, stack_column, stack_encoded
from ._order import DEFAULT_BLOCK_SIZE, DEFAULT_WINDOW, iter_epoch_order
from ._reader import Record, indexed_records, iter_records, iter_records_stream, read_record
from .errors import AtdataError, DecodeError, ShardFormatError, SkippedSamplesWarning, SourceError
from .schema import DictSample, PackableSample

if TYPE_CHECKING:
    from .dataset import Dataset

__all__ = ["OnError", "Pipeline", "SkipReport"]

log = logging.getLogger("atdata_torch")

T = TypeVar("T")
OnError = Literal["raise", "skip", "warn"]
Stage = tuple[str, Any]


@dataclass
class SkipReport:
    """What an epoch skipped under ``on_error="skip"`` / ``"warn"``.

    Attributes:
        samples: Number of samples skipped.
        shards: Shards whose remainder could not be read (truncated / corrupt tar structure).
        errors: The first errors seen (at most 20), as strings naming shard, key and offset.
    """

    samples: int = 0
    shards: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, exc: BaseException, *, shard: str | None = None) -> None:
        if shard is None:
            self.samples += 1
        else:
            self.shards.append(shard)
        if len(self.errors) < 20:
            self.errors.append(str(exc))

    def __bool__(self) -> bool:
        return bool(self.samples or self.shards)

    def summary(self) -> str:
        msg = f"skipped {self.samples} undecodable sample(s)"
        if self.shards:
            msg += f" and the unreadable remainder of {len(self.shards)} shard(s) {self.shards[:5]}"
        if self.errors:
            msg += f"; first error: {self.errors[0]}"
        return msg


def _with_context(exc: AtdataError, rec: Record) -> AtdataError:
    if exc.shard is not None and exc.key is not None:
        return exc
    return type(exc)(
        exc.message,
        shard=exc.shard or rec.shard,
        key=exc.key or rec.key,
        offset=exc.offset if exc.offset is not None else rec.offset,
        field=exc.field,
    )


def decode_record(rec: Record, decode_type: type) -> Any:
    """One record -> one sample of ``decode_type`` (DictSample or a packable class). Errors name shard and key."""
    try:
        data = _codec.members_to_map(rec.members)
        if decode_type is DictSample:
            return DictSample(_codec.decode_untyped_map(data))
        return _codec.build_sample(decode_type, data)
    except AtdataError as exc:
        raise _with_context(exc, rec) from exc


class Pipeline(IterableDataset[T], Generic[T]):
    """An iterable over a dataset in a given order, optionally batched.

    Each ``iter()`` runs one epoch and then advances the epoch, so a shuffled pipeline gives a new (reproducible)
    permutation per pass; :meth:`set_epoch` picks the epoch explicitly.

    Example:
        >>> # for batch in ds.shuffled(batch_size=64, seed=0): ...
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        on_error: OnError = "raise",
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if on_error not in ("raise", "skip", "warn"):
            raise ValueError(f"on_error must be 'raise', 'skip' or 'warn', got {on_error!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.on_error = on_error
        self.block_size = block_size
        self.window = window
        self._epoch = 0
        self.last_report = SkipReport()

    # ------------------------------------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will run."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next ``iter()`` (it then advances by itself)."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        n = self.dataset._known_len()
        if n is None:
            raise TypeError("len() is unknown for this pipeline (a filter() stage drops an unknown number)")
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[T]:
        epoch = self._epoch
        self._epoch += 1
        return self._run(epoch)

    # ------------------------------------------------------------------------------------------------ records
    def _worker_slice(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def _chunks(self, epoch: int, report: SkipReport) -> Iterator[list[Record]]:
        """This worker's records of the epoch, in order, in chunks (fewer generator hops per sample)."""
        ds = self.dataset
        shards = ds.list_shards()
        worker, nworkers = self._worker_slice()
        if not self.shuffle:
            for i, shard in enumerate(shards):
                if i % nworkers == worker:
                    yield from self._shard_chunks(shard, report)
            return
        indexes = ds.shard_indexes()
        views: dict[int, memoryview] = {}
        pos = 0
        for shard_idx, sample_idx in iter_epoch_order(
            [ix.count for ix in indexes],
            seed=self.seed,
            epoch=epoch,
            block_size=self.block_size,
            window=self.window,
        ):
            n = len(shard_idx)
            mine = np.arange(pos, pos + n) % nworkers == worker
            pos += n
            needed = set(np.unique(shard_idx[mine]).tolist())
            for s in [s for s in views if s not in needed]:
                del views[s]
            chunk: list[Record] = []
            for s, i in zip(shard_idx[mine].tolist(), sample_idx[mine].tolist(), strict=True):
                view = views.get(s)
                if view is None:
                    view = views[s] = memoryview(ds._buffer(shards[s]))
                ix = indexes[s]
                if ix.payload_ext is not None:
                    chunk.extend(indexed_records(view, shards[s], ix, (i,)))
                    continue
                try:
                    chunk.append(read_record(view, shards[s], ix.offsets[i], ix.lengths[i]))
                except ShardFormatError as exc:
                    if self.on_error == "raise":
                        raise
                    self._note(report, exc)
            yield chunk

    def _shard_chunks(self, shard: str, report: SkipReport, chunk_size: int = 1024) -> Iterator[list[Record]]:
        ds = self.dataset
        buf = ds._buffer_or_none(shard)
        n = 0
        expected: int | None = None
        chunk: list[Record] = []
        try:
            if buf is not None:
                fast = ds._fast_index(shard, buf)
                if fast is not None:
                    view = memoryview(buf)
                    for lo in range(0, fast.count, chunk_size):
                        yield indexed_records(view, shard, fast, range(lo, min(lo + chunk_size, fast.count)))
                    return
                expected = ds._sidecar_count(shard, buf)
                recs = iter_records(buf, shard)
            else:
                expected = ds._sidecar_count(shard, None)
                recs = iter_records_stream(ds.source.open_shard(shard), shard)
            for rec in recs:
                n += 1
                chunk.append(rec)
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
        except ShardFormatError as exc:
            if chunk:
                yield chunk
            if self.on_error == "raise":
                raise
            self._note(report, exc, shard=shard)
            return
        if chunk:
            yield chunk
        if expected is not None and expected != n:
            stale = ShardFormatError(
                f"the index sidecar says the shard holds {expected} samples but it holds {n}; the sidecar is "
                "stale or the shard was replaced: rebuild it with atd.build_index()",
                shard=shard,
            )
            if self.on_error == "raise":
                raise stale
            self._note(report, stale, shard=shard)

    def _note(self, report: SkipReport, exc: BaseException, *, shard: str | None = None) -> None:
        report.add(exc, shard=shard)
        if self.on_error == "warn":
            warnings.warn(f"atdata_torch skipped: {exc}", SkippedSamplesWarning, stacklevel=3)

    # ------------------------------------------------------------------------------------------------ samples
    def _samples(self, chunks: Iterator[list[Record]], report: SkipReport) -> Iterator[tuple[str, Any]]:
        decode_type = self.dataset._decode_type
        stages = self.dataset._stages
        raise_errors = self.on_error == "raise"
        for rec in (rec for chunk in chunks for rec in chunk):
            try:
                sample = decode_record(rec, decode_type)
            except (DecodeError, ShardFormatError) as exc:
                if raise_errors:
                    raise
                self._note(report, exc)
                continue
            keep = True
            for kind, fn in stages:
                if kind == "filter":
                    if not fn(sample):
                        keep = False
                        break
                else:
                    sample = fn(sample)
            if keep:
                yield rec.key, sample

    def _run(self, epoch: int) -> Iterator[Any]:
        report = SkipReport()
        self.last_report = report
        records = self._chunks(epoch, report)
        try:
            if self.batch_size is None:
                for _key, sample in self._samples(records, report):
                    yield sample
            elif self._fast_batches_possible():
                yield from self._fast_batches(records, report)
            else:
                yield from self._slow_batches(self._samples(records, report))
        except SourceError:
            raise
        if report:
            msg = f"atdata_torch epoch {epoch}: {report.summary()}"
            log.warning(msg)
            warnings.warn(msg, SkippedSamplesWarning, stacklevel=2)

    # ------------------------------------------------------------------------------------------------ batches
    def _slow_batches(self, samples: Iterator[tuple[str, Any]]) -> Iterator[SampleBatch[Any]]:
        bs = self.batch_size
        assert bs is not None
        out_type = self.dataset.sample_type
        keys: list[str] = []
        buf: list[Any] = []
        for key, sample in samples:
            keys.append(key)
            buf.append(sample)
            if len(buf) == bs:
                yield SampleBatch.from_samples(buf, out_type if out_type is not Any else None, keys)
                keys, buf = [], []
        if buf and not self.drop_last:
            yield SampleBatch.from_samples(buf, out_type if out_type is not Any else None, keys)

    def _fast_batches_possible(self) -> bool:
        t = self.dataset._decode_type
        return not self.dataset._stages and isinstance(t, type) and issubclass(t, PackableSample)

    def _fast_batches(self, chunks: Iterator[list[Record]], report: SkipReport) -> Iterator[SampleBatch[Any]]:
        """Columnar decoding: unpack each payload once, then build one array per NDArray field.

        Optimistic: any batch with a problem is decoded again record by record, which attributes the error to its
        record (and applies ``on_error``).
        """
        bs = self.batch_size
        assert bs is not None
        t: type = self.dataset._decode_type
        specs = t.__atdata_fields__  # type: ignore[attr-defined]
        names = [s.name for s in specs]
        unpackb = msgpack.unpackb
        skim, threshold = _codec.skim_map, _codec.SKIM_THRESHOLD
        required = frozenset(s.name for s in specs if not (s.optional or s.has_default))
        raise_errors = self.on_error == "raise"
        maps: list[Any] = []
        recs: list[Record] = []
        for rec in (rec for chunk in chunks for rec in chunk):
            members = rec.members
            d: Any = None
            if len(members) == 1:
                payload = members.get("msgpack")
                if payload is None:
                    payload = members.get("mp")
                if payload is not None:
                    try:
                        d = unpackb(payload) if len(payload) < threshold else skim(payload)
                    except Exception:
                        d = None
            if d.__class__ is not dict or not required.issubset(d):
                # Not the plain atdata layout, or broken: decode this record alone (precise errors).
                try:
                    d = decode_record(rec, t).__dict__
                except (DecodeError, ShardFormatError) as exc:
                    if raise_errors:
                        raise
                    self._note(report, exc)
                    continue
            recs.append(rec)
            maps.append(d)
            if len(recs) == bs:
                yield from self._columnar(recs, maps, specs, names, t, report)
                maps, recs = [], []
        if recs and not self.drop_last:
            yield from self._columnar(recs, maps, specs, names, t, report)

    def _columnar(
        self,
        recs: list[Record],
        maps: list[Any],
        specs: tuple[Any, ...],
        names: list[str],
        t: type,
        report: SkipReport,
    ) -> Iterator[SampleBatch[Any]]:
        columns: dict[str, Any] = {}
        try:
            for spec in specs:
                name = spec.name
                col = [m[name] for m in maps]  # KeyError/TypeError -> slow path
                kind = spec.kind
                if kind == "ndarray":
                    if all(v.__class__ is bytes or v.__class__ is memoryview for v in col):
                        arr = stack_encoded(col)
                        if arr is None or (
                            spec.dtype is not None and arr.dtype.newbyteorder("=") != spec.dtype.newbyteorder("=")
                        ):
                            raise _Fallback
                        columns[name] = arr
                    else:
                        columns[name] = stack_column([_codec.convert_field(spec, v) for v in col])
                elif (exact := _EXACT.get(kind)) is not None and all(v.__class__ is exact for v in col):
                    columns[name] = col
                else:
                    convert = _codec.convert_field
                    columns[name] = [convert(spec, v) for v in col]
        except (_Fallback, KeyError, TypeError, AtdataError):
            samples: list[tuple[str, Any]] = []
            for rec in recs:
                try:
                    samples.append((rec.key, decode_record(rec, t)))
                except (DecodeError, ShardFormatError) as exc:
                    if self.on_error == "raise":
                        raise
                    self._note(report, exc)
            if samples:
                # Partial batches can only come from skipped samples: regroup them through the slow batcher.
                yield SampleBatch.from_samples([s for _, s in samples], t, [k for k, _ in samples])
            return
        yield SampleBatch(columns, len(recs), t, [r.key for r in recs])


class _Fallback(Exception):
    pass


# Field kinds whose decoded values need no conversion when they have exactly this class.
_EXACT: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "bytes": bytes}


def apply_stage(kind: str, fn: Callable[[Any], Any]) -> Stage:
    """A (kind, fn) stage tuple."""
    return (kind, fn)
