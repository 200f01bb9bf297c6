"""Decoding: records -> samples (with the dataset's stages), and records -> columnar :class:`SampleBatch` es.

A :class:`Decoder` is made from what decoding depends on (decode type, sample type, stages, ``on_error``, the
pipeline's seed) and a ``note(report, exc)`` callback that records a skipped sample. It knows nothing of orders,
shards or topologies: the pipeline reads records and hands them over.

Batches of a packable type without stages take the columnar path (:meth:`Decoder.fast_batch`): each payload is
unpacked once, then one array is built per NDArray field. A pass that places array bytes straight into batch rows
(see ``atdata_torch._placement``) hands the decoder a :class:`~atdata_torch._placement.PlacedColumns`, which
supplies the placed field's column and repairs a placed record for the per-record decoder.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

import msgpack
import numpy as np

from . import _codec
from ._batch import SampleBatch, stack_column, stack_encoded
from ._placement import PlacedColumns, Placement
from ._reader import Record
from ._tar import hidden_members
from .errors import AtdataError, DecodeError, ShardFormatError
from .schema import DictSample, PackableSample

__all__ = ["Decoder", "Note", "decode_record", "lost", "sample_rng", "sample_seed"]

Note = Callable[[Any, BaseException], None]
"""Records a skipped sample: ``note(report, exc)`` (the pipeline counts it, forwards it or warns)."""


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
        err = _with_context(exc, rec)
        raise (_swallowing(rec, err) if isinstance(exc, DecodeError) else err) from exc


def _swallowing(rec: Record, err: AtdataError) -> AtdataError:
    """The error for a record that could not be decoded because a member's size field was corrupted upwards: its
    data then holds the headers of later members, whose samples are lost with it (counted, see :func:`lost`)."""
    for ext, buf in rec.members.items():
        found = hidden_members(buf, rec.shard, rec.key)
        if found is None:
            continue
        at, keys = found
        shown = ", ".join(repr(k) for k in keys[:3]) + (", ..." if len(keys) > 3 else "")
        out = ShardFormatError(
            f"member {rec.key}.{ext} declares {len(buf)} bytes, but tar headers lie inside its data from byte {at} "
            f"on: its size field is corrupt, and it swallowed {len(keys)} later sample(s) "
            f"({shown or 'parts of this one'}), lost with it; re-write the shard or re-download it",
            shard=rec.shard,
            key=rec.key,
            offset=rec.offset,
        )
        out.samples_lost = 1 + len(keys)  # type: ignore[attr-defined]
        return out
    return err


def lost(exc: BaseException) -> int:
    """How many samples a per-sample error lost: one, or more for a member that swallowed others."""
    n = getattr(exc, "samples_lost", 1)
    return n if isinstance(n, int) and n > 0 else 1


# ---------------------------------------------------------------------------------------------------- decoder
class Decoder:
    """Records -> samples or batches, for one pipeline's decode type, stages and error policy.

    Args:
        decode_type: What records decode to (:class:`DictSample` or a packable class).
        sample_type: What the stages yield (the batches' type; ``Any`` after ``map()``).
        stages: The dataset's ``(kind, fn)`` stages (``"map"``, ``"lens"``, ``"filter"``), in order.
        on_error: ``"raise"``, or ``"skip"`` / ``"warn"``: then a sample that does not decode goes to ``note``.
        note: Called as ``note(report, exc)`` for each skipped sample.
        seed: The pipeline's seed, for :func:`sample_seed` (with the epoch and the sample's global position).
    """

    __slots__ = ("decode_type", "note", "raise_errors", "sample_type", "seed", "stages")

    def __init__(
        self,
        decode_type: type,
        sample_type: Any,
        stages: tuple[tuple[str, Any], ...],
        on_error: Literal["raise", "skip", "warn"],
        note: Note,
        seed: int = 0,
    ) -> None:
        self.decode_type = decode_type
        self.sample_type = sample_type
        self.stages = stages
        self.raise_errors = on_error == "raise"
        self.note = note
        self.seed = seed

    # ------------------------------------------------------------------------------------------------ samples
    def samples(self, recs: list[Record], report: Any, positions: list[int], epoch: int) -> Iterator[tuple[str, Any]]:
        """``(key, sample)`` for each record that decodes and passes the filters, its stages run with the
        sample's RNG context (see :func:`sample_seed`) set."""
        decode_type = self.decode_type
        stages = self.stages
        raise_errors = self.raise_errors
        ctx = _SAMPLE_CONTEXT
        for rec, pos in zip(recs, positions, strict=True):
            # The key is set only while this sample's decode and stages run (sample_rng() raises elsewhere).
            outer, ctx.key = ctx.key, (self.seed, epoch, pos)
            try:
                try:
                    sample = decode_record(rec, decode_type)
                except (DecodeError, ShardFormatError) as exc:
                    if raise_errors:
                        raise
                    self.note(report, exc)
                    continue
                keep = True
                for kind, fn in stages:
                    if kind == "filter":
                        if not fn(sample):
                            keep = False
                            break
                    else:
                        sample = fn(sample)
            finally:
                ctx.key = outer
            if keep:
                yield rec.key, sample

    # ------------------------------------------------------------------------------------------------ batches
    @property
    def fast(self) -> bool:
        """Whether batches can take the columnar path (a packable decode type, no stages)."""
        t = self.decode_type
        return not self.stages and isinstance(t, type) and issubclass(t, PackableSample)

    def batch(
        self,
        recs: list[Record],
        report: Any,
        positions: list[int],
        epoch: int,
        placement: Placement | None = None,
        j: int = 0,
        slots: list[int] | None = None,
    ) -> SampleBatch[Any] | None:
        """One batch of these records (``None`` when none of them made it): columnar when :attr:`fast`, with batch
        ``j``'s placed field from ``placement`` when ``slots`` (see ``Pipeline._read``) say some array went there."""
        if not self.fast:
            return self.slow_batch(recs, report, positions, epoch)
        if placement is not None and slots is not None and not any(x >= 0 for x in slots):
            placement.take(j, make=False)  # nothing went to its rows (the bytes were in before the routes were set)
            slots = None
        return self.fast_batch(recs, report, self.placed(placement, j, slots))

    def placed(self, placement: Placement | None, j: int, slots: list[int] | None) -> PlacedColumns | None:
        """Batch ``j``'s placed columns (see ``atdata_torch._placement``), or ``None`` when nothing is placed: a
        pass without a ``placement`` or ``slots``, or whose layout could not be placed. Takes the batch's array."""
        if placement is None or slots is None or placement.layout is None:
            return None
        return PlacedColumns(placement, j, slots, _required(self.decode_type))

    def slow_batch(self, recs: list[Record], report: Any, positions: list[int], epoch: int) -> SampleBatch[Any] | None:
        """A batch of the samples of :meth:`samples` (stacked by :meth:`SampleBatch.from_samples`)."""
        pairs = list(self.samples(recs, report, positions, epoch))
        if not pairs:
            return None
        out_type = self.sample_type
        return SampleBatch.from_samples(
            [s for _, s in pairs], out_type if out_type is not Any else None, [k for k, _ in pairs]
        )

    def empty_batch(self) -> SampleBatch[Any]:
        """A batch of no samples, with the sample type's fields as empty columns."""
        t: Any = self.sample_type
        names = [f.name for f in t.__atdata_fields__] if isinstance(t, type) and issubclass(t, PackableSample) else []
        return SampleBatch({n: [] for n in names}, 0, t if isinstance(t, type) else DictSample, [])

    def fast_batch(
        self, recs: list[Record], report: Any, placed: PlacedColumns | None = None
    ) -> SampleBatch[Any] | None:
        """Columnar decoding: unpack each payload once, then build one array per NDArray field.

        Records that are not plain one-member msgpack samples, or that are broken, go through the per-record
        decoder, which names the record in its error (and applies ``on_error``).

        With ``placed``, the batch's placed field is the array its download filled: a placed record's payload member
        holds only the bytes after the array.
        """
        good, good_slots, maps = self._maps(recs, report, placed)
        if not good:
            return None
        t = self.decode_type
        try:
            columns = _columns(t.__atdata_fields__, maps, good_slots, placed)  # type: ignore[attr-defined]
        except (_Fallback, KeyError, TypeError, AtdataError):
            return self._per_record(good, good_slots, report, placed)
        return SampleBatch(columns, len(good), t, [r.key for r in good])

    def _maps(
        self, recs: list[Record], report: Any, placed: PlacedColumns | None
    ) -> tuple[list[Record], list[int], list[Any]]:
        """Each record's decoded map, for the records that decode: ``(records, slots, maps)``, with the records'
        slots (``-1``, or see ``Pipeline._read``; ``~row`` for a placed record that had to be repaired)."""
        t = self.decode_type
        unpackb = msgpack.unpackb
        skim, threshold = _codec.skim_map, _codec.SKIM_THRESHOLD
        required = _required(t)
        slots = placed.slots if placed is not None else None
        maps: list[Any] = []
        good: list[Record] = []
        good_slots: list[int] = []
        for n, rec in enumerate(recs):
            slot = slots[n] if slots is not None else -1
            if slot >= 0:
                assert placed is not None
                d, rec, slot = placed.decode(rec, slot)
                if d is not None:
                    good.append(rec)
                    good_slots.append(slot)
                    maps.append(d)
                    continue
            d = None
            members = rec.members
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
                sample = self._decode(rec, report)
                if sample is None:
                    continue
                d = sample.__dict__
            good.append(rec)
            good_slots.append(slot)
            maps.append(d)
        return good, good_slots, maps

    def _decode(self, rec: Record, report: Any) -> Any:
        """One record through the per-record decoder; ``None`` when it is skipped (``on_error``)."""
        try:
            return decode_record(rec, self.decode_type)
        except (DecodeError, ShardFormatError) as exc:
            if self.raise_errors:
                raise
            self.note(report, exc)
            return None

    def _per_record(
        self, good: list[Record], good_slots: list[int], report: Any, placed: PlacedColumns | None
    ) -> SampleBatch[Any] | None:
        """The batch of these records decoded one by one (a column would not stack, or a value is broken)."""
        samples: list[tuple[str, Any]] = []
        for rec, slot in zip(good, good_slots, strict=True):
            if slot >= 0:  # placed: its whole payload again, for the per-record decoder
                assert placed is not None
                rec = placed.whole(rec, slot)
            sample = self._decode(rec, report)
            if sample is not None:
                samples.append((rec.key, sample))
        if not samples:
            return None
        return SampleBatch.from_samples([s for _, s in samples], self.decode_type, [k for k, _ in samples])


class _Fallback(Exception):
    pass


def _columns(specs: Any, maps: list[Any], slots: list[int], placed: PlacedColumns | None) -> dict[str, Any]:
    """One column per field of the decoded maps (the placed field's from ``placed``).

    Raises:
        _Fallback, KeyError, TypeError, AtdataError: when a column does not stack; the batch is then decoded
            record by record.
    """
    columns: dict[str, Any] = {}
    placed_field = placed.field if placed is not None else None
    for spec in specs:
        name = spec.name
        if name == placed_field:
            assert placed is not None
            arr = placed.column(maps, slots)
            if arr is None:
                raise _Fallback
            columns[name] = arr
            continue
        columns[name] = _column(spec, [m[name] for m in maps])  # KeyError -> per-record path
    return columns


def _column(spec: Any, col: list[Any]) -> Any:
    """A field's column from its decoded values: one array for an NDArray field, else a list."""
    kind = spec.kind
    if kind == "ndarray":
        if all(v.__class__ is bytes or v.__class__ is memoryview for v in col):
            arr = stack_encoded(col)
            if arr is None or (spec.dtype is not None and arr.dtype.newbyteorder("=") != spec.dtype.newbyteorder("=")):
                raise _Fallback
            return arr
        return stack_column([_codec.convert_field(spec, v) for v in col])
    exact = _EXACT.get(kind)
    if exact is not None and all(v.__class__ is exact for v in col):
        return col
    convert = _codec.convert_field
    return [convert(spec, v) for v in col]


# Field kinds whose decoded values need no conversion when they have exactly this class.
_EXACT: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "bytes": bytes}

_REQUIRED: dict[type, frozenset[str]] = {}


def _required(t: type) -> frozenset[str]:
    req = _REQUIRED.get(t)
    if req is None:
        req = _REQUIRED[t] = frozenset(
            s.name
            for s in t.__atdata_fields__  # type: ignore[attr-defined]
            if not (s.optional or s.has_default)
        )
    return req


# ---------------------------------------------------------------------------------------------------- sample RNG
class _SampleContext(threading.local):
    key: tuple[int, int, int] | None = None


_SAMPLE_CONTEXT = _SampleContext()


def sample_seed() -> int:
    """A seed for the sample being transformed, from (pipeline seed, epoch, global position).

    Call it inside a ``map()`` / ``filter()`` function or a lens: the value depends only on the sample's place
    in the epoch, so random augmentations are reproducible for a seed and epoch, differ between samples and
    epochs, and do not depend on the number of ranks or workers.

    Raises:
        RuntimeError: outside a transform running in a pipeline.
    """
    key = _SAMPLE_CONTEXT.key
    if key is None:
        raise RuntimeError("sample_seed() / sample_rng() only work inside map(), filter() or a lens during iteration")
    ss = np.random.SeedSequence([key[0] & (2**63 - 1), key[1], key[2], 0x5A3D])
    return int(ss.generate_state(1, np.uint64)[0])


def sample_rng() -> np.random.Generator:
    """A numpy Generator for the sample being transformed (see :func:`sample_seed`).

    Example:
        >>> # ds.map(lambda s: flip(s) if atd.sample_rng().random() < 0.5 else s)
    """
    return np.random.default_rng(sample_seed())
