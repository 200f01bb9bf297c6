"""Placement: a remote pass's array bytes received straight into the rows of the batches they belong to.

A remote shard arrives through the kernel's copy into memory of ours; building a batch then copies each sample's
array into the batch's array, a second pass over every byte. For an in-order pass in batches of a fixed-shape array
field, the pipeline knows, before the bytes arrive, which batch and row each sample lands in, and (from the shard
index sidecar and the first sample's header) where in the shard its array data lies. A :class:`Placement` turns that
into one :class:`Router` per shard; the download of the shard receives each routed range straight into its batch
row (see ``sources._remote._SegmentSink``), and the pipeline only checks the bytes around it (the sample's header,
which must be the first sample's, and the fields after the array, decoded as usual).

Measured on loopback (image shape, 2 cores, the server on the same machine): the batch copy was 19% of all CPU
samples in a profile of remote passes, and dropping it altogether (an experiment that left the rows unfilled) took
a pass from 125-182 ms to 94-129 ms; with placement the copy is 3.5% of the samples (the rows of samples whose
bytes arrived before the routes were set are still copied), and ``benchmarks/bench_remote.py`` went from 51-67% of
local throughput to 61-74% (see the README for the runs).

The bytes go through ``recvmsg_into`` with a list of buffers (rows and the pieces between them, a few dozen per
call: one system call and one release of the GIL for megabytes), so only bodies that can do that are placed: plain
HTTP with a known length (:meth:`atdata_torch.sources.http._Body.readinto_many`). TLS sockets cannot, nor can
boto3's S3 bodies; their shards are read as before. So are shuffled and padded passes, unbatched ones, passes with
``map()``/``filter()`` stages, types without an NDArray field, and shards without an index sidecar that locates
each payload.

Only the first map entry of each payload is placed, when it is an NDArray field of the schema: atdata writes fields
in declaration order, so the header before that array (map size, key, ``bin`` length, dtype and shape) is the same
bytes for every sample of a fixed-shape field. A sample whose header differs was routed anyway: its payload is put
back together from the bytes around its row and the row, and it is decoded as any other (so is a placed sample
whose other fields do not decode, :meth:`Placement.repair`, for the error that names it). Passes through
``atdata_torch.nodes`` are not placed.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError
from typing import Any, NamedTuple

import msgpack
import numpy as np

from . import _shm
from ._msgpack import SKIM_THRESHOLD, _skip, bin_span, map_header, pack_map_header, skim_map
from ._ndarray import parse_array_header
from ._reader import Record

__all__ = ["MIN_PLACED", "Layout", "PlacedColumns", "Placement", "Router", "learn", "placed_record"]

MIN_PLACED = 64 << 10  # smallest array worth placing (bytes): below it the batch copy is cheap


class Layout(NamedTuple):
    """What every placed sample shares (learned from one sample by :func:`learn`).

    Attributes:
        field: The placed NDArray field (the first entry of every payload).
        prefix: Payload bytes before the array data (map header, key, ``bin`` header, ndarray-bytes header).
        nbytes: Bytes of array data per sample.
        dtype: The array's dtype.
        shape: The array's shape.
        rest: A msgpack map header for the payload's other entries (decoded from the bytes after the array).
    """

    field: str
    prefix: bytes
    nbytes: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    rest: bytes


class Placement:
    """One pass's placement: the batches' arrays (made by the download threads as the bytes arrive) and the
    layout every placed sample shares. Made before the layout is known, since it names the pass to the source
    (``RemoteSource.stream_buffer``'s ``owner``); :meth:`plan` sets both."""

    def __init__(self) -> None:
        self.layout: Layout | None = None
        self.routers: dict[int, Router] = {}  # by shard number in the pass
        self._rows: dict[int, int] = {}  # batch number -> rows
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # batch -> (array, its rows as bytes)
        self._taken: set[int] = set()
        self._closed = False
        self._keep = 0  # pooled batch arrays to keep (see _new)
        self._lock = threading.Lock()

    def plan(
        self,
        layout: Layout,
        groups: Sequence[np.ndarray],
        first: int,
        shard_of: np.ndarray,
        index_of: np.ndarray,
        indexes: Sequence[Any],
    ) -> None:
        """Routes for the batches ``groups[0]`` (batch number ``first``), ``groups[1]``, ...: one router per shard,
        for the samples whose payload holds the whole array (a shorter one is read as usual)."""
        self.layout = layout
        if not groups:
            return
        sizes = [len(g) for g in groups]
        for j, size in enumerate(sizes):
            self._rows[first + j] = size
        pos = np.concatenate(groups)
        batch = np.repeat(np.arange(first, first + len(groups), dtype=np.int64), sizes)
        row = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
        shard_ids = shard_of[pos]
        order = np.argsort(shard_ids, kind="stable")
        cut = np.flatnonzero(np.diff(shard_ids[order])) + 1
        pre, nbytes = len(layout.prefix), layout.nbytes
        for part in np.split(order, cut):
            s = int(shard_ids[part[0]])
            ix = indexes[s]
            idx = index_of[pos[part]]
            starts = np.asarray(ix.payload_offsets, dtype=np.int64)[idx] + pre
            fits = np.asarray(ix.payload_sizes, dtype=np.int64)[idx] >= pre + nbytes
            idx, starts, part = idx[fits], starts[fits], part[fits]
            if not len(idx) or np.any(np.diff(starts) < nbytes):
                continue  # not a forward read of this shard: nothing placed
            route_of = np.full(ix.count, -1, dtype=np.int64)
            route_of[idx] = np.arange(len(idx))
            self.routers[s] = Router(self, starts, starts + nbytes, batch[part], row[part], route_of)
            # Batches in flight: those of the shard being read and of the shards downloading ahead of it.
            self._keep = max(self._keep, 3 * len(np.unique(batch[part])) + 4)

    def dest(self, j: int, r: int) -> memoryview:
        """Row ``r`` of batch ``j`` as bytes (the batch's array is made on first use; called by downloads)."""
        with self._lock:
            if self._closed:
                raise CancelledError("the pass these bytes were routed for has ended")
            got = self._arrays.get(j)
            if got is None:
                if j in self._taken:
                    raise RuntimeError(f"batch {j} was built before all of its bytes arrived")  # pragma: no cover
                got = self._arrays[j] = self._new(j)
        return memoryview(got[1][r])

    def take(self, j: int, *, make: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
        """Batch ``j``'s array and its rows as bytes, once all of its placed bytes are in (the pipeline read them);
        without ``make``, ``None`` when no download made it."""
        with self._lock:
            self._taken.add(j)
            got = self._arrays.pop(j, None)
            return got if got is not None or not make else self._new(j)

    def _new(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch's array, in pooled memory: the kernel receives into pages that are mapped already (a fresh array
        per batch made the download zero-fill every page it received into, the largest cost in a profile)."""
        from .sources._buffers import _buffer_pool

        layout = self.layout
        assert layout is not None
        rows = self._rows[j]
        if _shm.active():  # a Loader's worker: a fresh shared array per batch, sent as a handle (see _shm)
            arr = _shm.empty((rows, *layout.shape), layout.dtype)
            return arr, arr.reshape(rows, -1).view(np.uint8)
        buf = _buffer_pool(self._keep, "placed").get(rows * layout.nbytes)
        arr = np.frombuffer(memoryview(buf), layout.dtype).reshape((rows, *layout.shape))  # type: ignore[arg-type]
        return arr, arr.reshape(rows, -1).view(np.uint8)

    def repair(self, rec: Record, row: np.ndarray, ext: str) -> Record:
        """The record of a placed sample (its payload member holds the bytes after the array) with its whole
        payload put back together."""
        layout = self.layout
        assert layout is not None
        suffix = rec.members[ext]
        pre, nbytes = len(layout.prefix), layout.nbytes
        payload = bytearray(pre + nbytes + len(suffix))
        payload[:pre] = layout.prefix
        payload[pre : pre + nbytes] = memoryview(row)  # type: ignore[arg-type]
        payload[pre + nbytes :] = suffix
        return rec._replace(members={ext: memoryview(payload)})

    def close(self) -> None:
        """The pass ended: downloads still routing into it stop, and its arrays are let go."""
        with self._lock:
            self._closed = True
            self._arrays.clear()


class Router:
    """The placed ranges of one shard, in shard order: range ``i`` is ``[starts[i], starts[i] + nbytes)`` and goes
    to row ``rows[i]`` of batch ``batches[i]``.

    The download that receives the shard takes the router up at some point of the shard (:meth:`attach`): ranges
    that start at or after that point are placed (``first`` on), the others are read from the download's segments.
    """

    __slots__ = ("batches", "ends", "first", "owner", "route_of", "rows", "starts")

    def __init__(
        self,
        owner: Placement,
        starts: np.ndarray,
        ends: np.ndarray,
        batches: np.ndarray,
        rows: np.ndarray,
        route_of: np.ndarray,
    ) -> None:
        self.owner = owner
        self.starts: list[int] = starts.tolist()
        self.ends: list[int] = ends.tolist()
        self.batches: list[int] = batches.tolist()
        self.rows: list[int] = rows.tolist()
        self.route_of = route_of  # sample index in the shard -> range number (-1: not routed)
        self.first: int | None = None  # set once by the download (None: it never took this router up)

    def attach(self, pos: int) -> int:
        """The download is at byte ``pos``: the first range it places (set once, from the download's thread)."""
        if self.first is None:
            self.first = bisect.bisect_left(self.starts, pos)
        return self.first

    def placed(self, index: int) -> int:
        """The range of sample ``index`` if its bytes went to a batch row, else -1 (call once the bytes are in)."""
        first = self.first
        if first is None:
            return -1
        r = int(self.route_of[index])
        return r if r >= first else -1

    def dest(self, i: int) -> memoryview:
        return self.owner.dest(self.batches[i], self.rows[i])


def learn(payload: Any, fields: dict[str, Any]) -> Layout | None:
    """The layout to place, from one sample's payload: ``None`` unless its first entry is an NDArray field of the
    schema (``fields``: name -> field spec) whose array is at least :data:`MIN_PLACED` bytes."""
    view = memoryview(payload)
    try:
        head = map_header(view)
        if head is None or head[0] < 1:
            return None
        entries, pos = head
        end = _skip(view, pos)
        key = msgpack.unpackb(view[pos:end])
        spec = fields.get(key) if isinstance(key, str) else None
        span = bin_span(view, end) if spec is not None and spec.kind == "ndarray" else None
        if span is None or spec is None:
            return None
        start, stop = span
        dtype, shape, hdr = parse_array_header(view[start:stop])
    except Exception:
        return None
    nbytes = stop - start - hdr
    if nbytes < MIN_PLACED or (spec.dtype is not None and dtype.newbyteorder("=") != spec.dtype.newbyteorder("=")):
        return None
    return Layout(key, bytes(view[: start + hdr]), nbytes, dtype, tuple(shape), pack_map_header(entries - 1))


def placed_record(placement: Any, router: Any, r: int, view: Any, shard: str, ix: Any, i: int) -> tuple[Record, bool]:
    """The record of sample ``i`` of a shard, whose array bytes went to its batch row (range ``r`` of ``router``):
    the payload's bytes after the array when the bytes before it are the layout's, else (``True``) the whole payload
    put back together from the bytes around the row and the row."""
    layout = placement.layout
    p = ix.payload_offsets[i]
    lo = p + len(layout.prefix)
    hi = lo + layout.nbytes
    end = p + ix.payload_sizes[i]
    head = view[p:lo]
    if head == layout.prefix:
        return Record(shard, ix.keys[i], ix.offsets[i], ix.lengths[i], {ix.payload_ext: view[hi:end]}, p), False
    payload = memoryview(b"".join((head, placement.dest(router.batches[r], router.rows[r]), view[hi:end])))
    return Record(shard, ix.keys[i], ix.offsets[i], ix.lengths[i], {ix.payload_ext: payload}, p), True


_PLACED = object()  # the value of a placed field in a decoded map (its bytes are in the batch's array)


class PlacedColumns:
    """Batch ``j``'s placed field, for the columnar decoder (``atdata_torch._decode``): decodes a placed record's
    other fields, supplies the field's column (the array the download filled), and repairs a placed record for the
    per-record decoder.

    Args:
        placement: The pass's placement (its layout set).
        j: The batch number; the batch's array is taken from ``placement`` here.
        slots: One per record of the batch (see ``Pipeline._read``): its row if its array went there, else ``~row``.
        required: The decode type's required fields.
    """

    __slots__ = ("arr", "field", "placement", "required_rest", "rest", "rows", "slots")

    def __init__(self, placement: Placement, j: int, slots: list[int], required: frozenset[str]) -> None:
        layout = placement.layout
        assert layout is not None
        self.placement = placement
        self.slots = slots
        self.field = layout.field
        self.rest = layout.rest
        got = placement.take(j)
        assert got is not None
        self.arr, self.rows = got
        self.required_rest = required - {layout.field}  # what the fields after a placed array must hold

    def decode(self, rec: Record, slot: int) -> tuple[dict[str, Any] | None, Record, int]:
        """A placed record's map (the placed field a marker) with its slot; ``None`` when the fields after its array
        do not decode, with the record repaired and the slot ``~slot`` (it is then decoded as any other, and copied).
        """
        ((ext, tail),) = rec.members.items()
        rest = self.rest + bytes(tail)
        try:
            d = msgpack.unpackb(rest) if len(rest) < SKIM_THRESHOLD else skim_map(rest)
        except Exception:
            d = None
        if d.__class__ is dict and self.required_rest.issubset(d):
            d[self.field] = _PLACED
            return d, rec, slot
        return None, self.placement.repair(rec, self.rows[slot], ext), ~slot

    def whole(self, rec: Record, slot: int) -> Record:
        """A placed record (``slot >= 0``) with its whole payload again, for the per-record decoder."""
        return self.placement.repair(rec, self.rows[slot], next(iter(rec.members)))

    def column(self, maps: list[Any], slots: list[int]) -> np.ndarray | None:
        """The placed field's column: the batch's array, whose placed rows the download filled; the other rows are
        copied in from their decoded values here, and the rows of samples that were skipped are left out. ``None``
        when a copied value is not the layout's array (the batch is then decoded record by record)."""
        layout = self.placement.layout
        assert layout is not None
        arr, rows, name = self.arr, self.rows, self.field
        for m, slot in zip(maps, slots, strict=True):
            if slot >= 0:
                continue
            v = m[name]
            if v.__class__ is bytes or v.__class__ is memoryview:
                dtype, shape, off = parse_array_header(v)
                if dtype != layout.dtype or tuple(shape) != layout.shape:
                    return None
                rows[~slot] = np.frombuffer(v, dtype=np.uint8, offset=off)
            elif isinstance(v, np.ndarray) and v.dtype == layout.dtype and v.shape == layout.shape:
                arr[~slot] = v
            else:
                return None
        used = [s if s >= 0 else ~s for s in slots]
        if used != list(range(len(arr))):
            arr = arr[np.asarray(used, dtype=np.int64)]
        return arr
