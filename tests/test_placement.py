"""Placement (atdata_torch._placement): an ordered remote pass receives each sample's array straight into its batch
row. Checked against a real HTTP server (tests/http_server.py): the batches equal a local read's, the batch arrays
are the memory the download received into, and everything that breaks the shared layout (ragged arrays, a broken
payload, a dropped connection, a pass ended early, another reader of the same shard) still reads correctly."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from http_server import FaultServer
from numpy.typing import NDArray
from remote_data import FORK_WITH_THREADS, Rec, deadline, rows, write_shards

import atdata_torch as atd
from atdata_torch._ndarray import array_to_bytes
from atdata_torch._placement import MIN_PLACED, learn
from atdata_torch.errors import SkippedSamplesWarning
from atdata_torch.sources.http import HTTPSource
from atdata_torch.sources.local import LocalSource

PATTERN = "big-{000000..000002}.tar"
WIDTH = 1 << 16  # float32: 256 KiB arrays, placed (MIN_PLACED is 64 KiB)


def fast(**kw: object) -> dict[str, object]:
    opts: dict[str, object] = {"timeout": 5.0, "backoff": 0.01, "retries": 4}
    opts.update(kw)
    return opts


@pytest.fixture(params=[None, 4], ids=["default-layout", "packed"])
def big(http_root: Path, request: pytest.FixtureRequest) -> list[Path]:
    """3 shards of 20 samples with 256 KiB arrays (5 MiB a shard: several download segments each), in the default
    layout and in the compact one (4 samples per tar member)."""
    return write_shards(http_root, "big", n=60, per_shard=20, width=WIDTH, pack=request.param)


NAMES = ["big-000000.tar", "big-000001.tar", "big-000002.tar"]


def hold(server: FaultServer, gate: threading.Event, *, first: int = 4 << 20, later: int = 100_000) -> None:
    """Hold the shards back (``first`` bytes of the first one, ``later`` of the others) until ``gate`` opens: the
    pass learns its layout from the first batch while most bytes are still to come, as with large shards. (A
    stream's reads double from 256 KiB until they take 4 MiB: ``first`` ends one, or the read waits for the gate.)"""
    server.pause(NAMES[0], after=first, gate=gate)
    for name in NAMES[1:]:
        server.pause(name, after=later, gate=gate)


def placed_batches(batches: list[Any]) -> int:
    """Batches whose ``x`` was not stacked by a copy but received into: pooled memory, exported by a memoryview."""
    n = 0
    for b in batches:
        base = np.asarray(b.x).base
        while isinstance(base, np.ndarray):
            base = base.base
        n += isinstance(base, memoryview)
    return n


def gated_pass(server: FaultServer, ds: atd.Dataset[Any], gate: threading.Event, **kw: Any) -> list[Any]:
    """An ordered pass in batches of 8 whose shards are held back (:func:`hold`) until its first batch is in."""
    it = iter(ds.ordered(batch_size=8, **kw))
    first = next(it)
    gate.set()
    return [first, *it]


# ---------------------------------------------------------------------------------------------------- layout
def _payload(**fields: Any) -> bytes:
    return msgpack.packb({k: array_to_bytes(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()})


def test_learn_reads_the_layout_of_a_leading_array() -> None:
    x = np.arange(WIDTH, dtype=np.float32)
    payload = _payload(x=x, label=3, name="a")
    layout = learn(payload, {s.name: s for s in Rec.__atdata_fields__})
    assert layout is not None
    assert (layout.field, layout.nbytes, layout.dtype, layout.shape) == ("x", x.nbytes, np.float32, (WIDTH,))
    assert payload[len(layout.prefix) : len(layout.prefix) + layout.nbytes] == x.tobytes()
    assert msgpack.unpackb(layout.rest + payload[len(layout.prefix) + layout.nbytes :]) == {"label": 3, "name": "a"}


def test_learn_declines_what_it_cannot_place() -> None:
    fields = {s.name: s for s in Rec.__atdata_fields__}
    big_x = np.zeros(WIDTH, np.float32)
    assert learn(_payload(label=3, x=big_x, name="a"), fields) is None  # the array is not the first entry
    assert learn(_payload(x=np.zeros(MIN_PLACED // 8, np.float32), label=3, name="a"), fields) is None  # small
    assert learn(_payload(x=big_x.astype(np.float64), label=3, name="a"), fields) is None  # not the field's dtype
    assert learn(_payload(y=big_x, label=3, name="a"), fields) is None  # not a field of the schema
    assert learn(b"\xc1", fields) is None  # not msgpack


# ---------------------------------------------------------------------------------------------------- passes
def test_an_ordered_pass_places_arrays_in_their_batch_rows(http_server: FaultServer, big: list[Path]) -> None:
    gate = threading.Event()
    hold(http_server, gate)
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast())
    local = atd.Dataset[Rec]([str(p) for p in big])
    with deadline(30):
        got = gated_pass(http_server, ds, gate)
    assert rows(got) == rows(local.ordered()) and len(got) == 8
    # The first batch teaches the layout; the others are the very memory their bytes were received into.
    assert placed_batches(got) >= 6
    assert placed_batches(list(local.ordered(batch_size=8))) == 8  # local reads place every batch (see below)
    assert placed_batches(list(local.shuffled(batch_size=8))) == 0
    assert all(np.asarray(b.x).flags.writeable and np.asarray(b.x).flags.c_contiguous for b in got)
    for name in NAMES:
        assert len(http_server.downloads(name)) == 1


def test_a_pass_whose_shards_are_in_already_reads_them_as_usual(http_server: FaultServer, big: list[Path]) -> None:
    # Small shards on loopback are all in before the first batch: nothing is left to place, nothing changes.
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast())
    with deadline(30):
        got = list(ds.ordered(batch_size=8))
    assert rows(got) == rows(atd.Dataset[Rec]([str(p) for p in big]).ordered())


def test_every_pass_of_a_reused_pipeline_places_and_matches(http_server: FaultServer, big: list[Path]) -> None:
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast())
    want = rows(atd.Dataset[Rec]([str(p) for p in big]).ordered())
    with deadline(60):
        for _ in range(3):
            gate = threading.Event()
            hold(http_server, gate)
            got = gated_pass(http_server, ds, gate)
            assert rows(got) == want and placed_batches(got) >= 6


def test_a_connection_dropped_inside_an_array_resumes_into_its_row(http_server: FaultServer, big: list[Path]) -> None:
    gate = threading.Event()
    hold(http_server, gate)
    # 1.5 MiB into the second shard is inside a sample's array, past where the pass took its router up.
    http_server.clear()
    hold(http_server, gate)
    http_server._faults.pop(http_server._key(NAMES[1]))
    http_server.drop(NAMES[1], after=(3 << 19) + 1234, gate=gate, gate_at=100_000)
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast())
    with deadline(30):
        got = gated_pass(http_server, ds, gate)
    assert rows(got) == rows(atd.Dataset[Rec]([str(p) for p in big]).ordered())
    assert len(http_server.downloads(NAMES[1])) == 2 and placed_batches(got) >= 6


def test_ragged_arrays_are_put_back_together(http_server: FaultServer, http_root: Path) -> None:
    @atd.packable
    class Var:
        x: NDArray[np.float32]
        label: int

    rng = np.random.default_rng(3)
    widths = [WIDTH] * 10 + [WIDTH + 3, WIDTH - 5] + [WIDTH] * 12  # two samples do not share the layout
    samples = [Var(x=rng.standard_normal(w).astype(np.float32), label=i) for i, w in enumerate(widths)]
    atd.write_samples(samples, http_root / "var.tar", maxcount=12, progress=False)
    url = f"{http_server.base_url}/var-{{000000..000001}}.tar"
    local = atd.Dataset[Var](str(http_root / "var-{000000..000001}.tar"))

    def flat(batches: Any) -> list[tuple[int, bytes]]:
        return [(int(lab), np.asarray(x).tobytes()) for b in batches for x, lab in zip(b.x, b.label, strict=True)]

    gate = threading.Event()
    http_server.pause("var-000000.tar", after=2 << 20, gate=gate)
    http_server.pause("var-000001.tar", after=100_000, gate=gate)
    with deadline(30):
        it = iter(atd.Dataset[Var](url, **fast()).ordered(batch_size=4))
        got = [next(it)]
        gate.set()
        got += list(it)
    assert flat(got) == flat(local.ordered(batch_size=4)) and len(got) == 6
    assert isinstance(got[2].x, list)  # the batch with the odd samples is ragged, as a local read gives it
    assert placed_batches(got[3:]) == 3  # (the second batch arrived before the routes were set: held at 2 MiB)


def test_a_broken_payload_after_a_placed_array_is_skipped_as_locally(http_server: FaultServer, big: list[Path]) -> None:
    local = atd.Dataset[Rec]([str(p) for p in big])
    ix = local.shard_indexes()[1]
    data = bytearray(big[1].read_bytes())
    i = 13
    p, size = ix.payload_offsets[i], ix.payload_sizes[i]  # type: ignore[index]
    at = data.index(b"\xa5label", p + size - 32)
    data[at] = 0xC1  # a byte msgpack never uses, in the fields after the array
    big[1].write_bytes(bytes(data))
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast())
    with pytest.warns(SkippedSamplesWarning):
        want = rows(local.ordered(batch_size=8, on_error="skip"))
    gate = threading.Event()
    hold(http_server, gate)
    with deadline(30), pytest.warns(SkippedSamplesWarning):
        got = gated_pass(http_server, ds, gate, on_error="skip")
    # The batch that lost a sample is its placed rows less that one: a copy.
    assert rows(got) == want and len(want) == 59 and placed_batches(got) >= 5
    gate = threading.Event()
    hold(http_server, gate)
    with deadline(30), pytest.raises(atd.DecodeError) as info:
        gated_pass(http_server, ds, gate)
    assert info.value.key == ix.keys[i] and "big-000001.tar" in str(info.value)


def test_a_pass_ended_early_leaves_nothing_behind(http_server: FaultServer, big: list[Path]) -> None:
    gate = threading.Event()
    hold(http_server, gate)
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast())
    want = rows(atd.Dataset[Rec]([str(p) for p in big]).ordered())
    with deadline(30):
        it = iter(ds.ordered(batch_size=8))
        first = [next(it)]
        gate.set()
        first.append(next(it))
        it.close()  # routes were set up for the whole pass; their downloads stop
        assert rows(first) == want[:16]
        st = ds.source._state()  # type: ignore[attr-defined]
        assert not st["routers"] and all(job.router is None for job in st["pending"].values())
        assert rows(ds.ordered(batch_size=8)) == want


def test_another_reader_never_gets_a_download_routed_for_a_pass(http_server: FaultServer, big: list[Path]) -> None:
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast())
    src: HTTPSource = ds.source  # type: ignore[assignment]
    url = src.list_shards()[1]
    want = rows(atd.Dataset[Rec]([str(p) for p in big]).ordered())
    gate = threading.Event()
    hold(http_server, gate)
    with deadline(30):
        it = iter(ds.ordered(batch_size=8))
        got = [next(it)]  # the second shard is downloading ahead (held back), routed for this pass
        gate.set()
        assert bytes(src.buffer(url)) == big[1].read_bytes()  # not that download: a whole, plain copy
        got += list(it)
    assert rows(got) == want
    assert len(http_server.downloads(NAMES[1])) == 3  # the routed one (stopped), the reader's, and the pass's own again


@FORK_WITH_THREADS
def test_dataloader_workers_read_held_back_shards_in_order(http_server: FaultServer, big: list[Path]) -> None:
    from torch.utils.data import DataLoader

    gate = threading.Event()
    hold(http_server, gate)  # each worker learns the layout while most of every shard is still to come
    pipe = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast()).ordered(batch_size=5)
    want = rows(atd.Dataset[Rec]([str(p) for p in big]).ordered())
    with deadline(60):
        it = iter(DataLoader(pipe, batch_size=None, num_workers=2, collate_fn=lambda b: b))
        got = [next(it)]
        gate.set()
        got += list(it)
    assert rows(got) == want


def test_a_resumed_pass_places_from_where_it_resumes(http_server: FaultServer, big: list[Path]) -> None:
    gate = threading.Event()
    http_server.pause(NAMES[1], after=2 << 20, gate=gate)  # the resumed first batch ends 1 MiB into this shard
    http_server.pause(NAMES[2], after=100_000, gate=gate)
    pipe = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast()).ordered(batch_size=8)
    pipe.resume(0, 16)  # mid-epoch, as a restored StatefulDataLoader does: the pass starts at its third batch
    with deadline(30):
        it = iter(pipe)
        got = [next(it)]
        gate.set()
        got += list(it)
    assert rows(got) == rows(atd.Dataset[Rec]([str(p) for p in big]).ordered())[16:]
    assert placed_batches(got) >= 4
    assert [len(http_server.downloads(name)) for name in NAMES] == [1, 1, 1]


def test_a_body_that_cannot_scatter_is_read_as_before(
    http_server: FaultServer, big: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # TLS sockets (and S3 bodies) have no recvmsg_into: the download declines its router, nothing is placed.
    from atdata_torch.sources import http as http_mod

    monkeypatch.setattr(http_mod._Body, "scatters", property(lambda self: False))
    gate = threading.Event()
    hold(http_server, gate)
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast())
    with deadline(30):
        got = gated_pass(http_server, ds, gate)
    assert rows(got) == rows(atd.Dataset[Rec]([str(p) for p in big]).ordered()) and placed_batches(got) == 0


# ---------------------------------------------------------------------------------------------------- receive
def test_a_body_receives_into_many_buffers(http_server: FaultServer, big: list[Path]) -> None:
    url = http_server.url("big-000000.tar")
    want = big[0].read_bytes()
    stream, total = HTTPSource([url], **fast())._open_range(url, 0)
    assert total == len(want) and stream.scatters  # type: ignore[attr-defined]
    out = bytearray()
    sizes = [1, 511, 4096, 100_000, 3, 250_000]
    with deadline(10):
        while True:
            bufs = [memoryview(bytearray(n)) for n in sizes]
            got = stream.readinto_many(bufs)  # type: ignore[attr-defined]
            if not got:
                break
            out += b"".join(bytes(b) for b in bufs)[:got]
    stream.close()
    assert bytes(out) == want


class _Scripted:
    """A body that receives into many buffers, in the amounts a script gives (short receives at chosen bytes)."""

    scatters = True

    def __init__(self, data: bytes, cuts: list[int]) -> None:
        self.data, self.pos, self.cuts = data, 0, list(cuts)

    def readinto_many(self, bufs: list[memoryview]) -> int:
        limit = self.cuts.pop(0) if self.cuts else len(self.data)
        got = 0
        for b in bufs:
            n = min(len(b), limit - self.pos)
            if n <= 0:
                break
            b[:n] = self.data[self.pos : self.pos + n]
            self.pos += n
            got += n
        return got


def test_short_receives_across_segment_ends_keep_every_byte(big: list[Path]) -> None:
    import types

    from atdata_torch._placement import Placement
    from atdata_torch.sources._remote import SEGMENT, _buffer_pool, _SegmentSink

    data = big[0].read_bytes()
    ix = atd.Dataset[Rec](str(big[0])).shard_indexes()[0]
    p0, n0 = ix.payload_offsets[0], ix.payload_sizes[0]  # type: ignore[index]
    layout = learn(data[p0 : p0 + n0], {s.name: s for s in Rec.__atdata_fields__})
    assert layout is not None
    placement = Placement()
    groups = [np.arange(k, min(k + 4, ix.count)) for k in range(0, ix.count, 4)]
    placement.plan(layout, groups, 0, np.zeros(ix.count, np.int64), np.arange(ix.count), [ix])
    router = placement.routers[0]
    sink = _SegmentSink(_buffer_pool(0, "segment"), "big-000000.tar", 2, types.SimpleNamespace(router=router))
    sink.reserve(len(data))
    # The third read asks for bytes as far as the second segment (which it takes from the pool) and receives only up
    # to a point between two rows just before the first segment's end: the next read goes on in the first segment,
    # which must be the one that holds the bytes before (a new one from the pool would lose them).
    cut = max(e for e in router.ends if e + 10 < SEGMENT) + 10
    assert not any(lo <= cut < hi for lo, hi in zip(router.starts, router.ends, strict=True))
    stream = _Scripted(data, [1000, SEGMENT // 2, cut, SEGMENT + 7, len(data) - 5])
    held = []  # a reader holds the bytes of the samples it reads (and so their segments)
    while sink.pos < len(data):  # as the download asks: never past the shard's end
        assert sink.read_from(stream, min(4 << 20, len(data) - sink.pos))
        held.append(sink.fill[0:512])  # type: ignore[index]
    fill = sink.finished()
    fill.finish()
    assert router.first == 0 and fill.router is router
    covered = np.zeros(len(data), bool)
    for i, (lo, hi) in enumerate(zip(router.starts, router.ends, strict=True)):
        assert bytes(placement.dest(router.batches[i], router.rows[i])) == data[lo:hi]
        covered[lo:hi] = True
    edges = np.diff(np.concatenate([[0], ~covered, [0]]).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    assert len(starts) == len(router.starts) + 1
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):  # the bytes between the rows: in the segments
        assert bytes(fill[lo:hi]) == data[lo:hi]
    assert all(bytes(h) == data[:512] for h in held)


# ---------------------------------------------------------------------------------------------------- local files
class _Unplaced(LocalSource):
    """The same files, read whole and stacked into batches (no route(): nothing is placed)."""

    route = None  # type: ignore[assignment]


def _columns(batches: list[Any]) -> list[tuple[list[str], list[tuple[str, str, tuple[int, ...], bytes]]]]:
    """Batches as comparable values: each batch's keys, and per field its type, dtype, shape and bytes."""
    out = []
    for b in batches:
        cols = []
        for name in sorted(b.fields):
            v = b[name]
            if isinstance(v, np.ndarray):
                cols.append((name, str(v.dtype), v.shape, v.tobytes()))
            else:  # a list (ragged arrays, labels)
                cols.append((name, "list", (len(v),), repr([np.asarray(x).tobytes() for x in v]).encode()))
        out.append((list(b.keys), cols))
    return out


def _local_pair(paths: list[Path], t: Any, **kw: Any) -> tuple[list[Any], list[Any], list[str]]:
    """An ordered pass of ``paths`` placed and unplaced, and the shards the placed pass routed."""
    routed: list[str] = []

    class Spy(LocalSource):
        def route(self, shard: str, router: Any) -> None:
            routed.append(shard)
            super().route(shard, router)

    ids = [str(p) for p in paths]
    placed = list(atd.Dataset[t](Spy(ids)).ordered(**kw))
    plain = list(atd.Dataset[t](_Unplaced(ids)).ordered(**kw))
    return placed, plain, routed


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        ("uint8", (64, 64, 20)),
        ("float32", (WIDTH,)),
        ("float64", (96, 100)),
        ("int16", (3, 128, 97)),
        ("bool", (70_000,)),
    ],
)
@pytest.mark.parametrize("pack", [None, 5], ids=["default-layout", "packed"])
def test_local_ordered_reads_place_the_same_batches(
    tmp_path: Path, dtype: str, shape: tuple[int, ...], pack: int | None
) -> None:
    @atd.packable
    class Arr:
        a: NDArray
        label: int
        tag: str

    rng = np.random.default_rng(7)
    samples = [Arr(a=(rng.integers(0, 200, shape) % 7).astype(dtype), label=i, tag=f"t{i}") for i in range(45)]
    ds = atd.write_samples(samples, tmp_path / "arr.tar", maxcount=13, progress=False, pack=pack)  # 13+13+13+6
    paths = [Path(s) for s in ds.list_shards()]
    placed, plain, routed = _local_pair(paths, Arr, batch_size=7)  # batches across shard ends, a partial last one
    assert _columns(placed) == _columns(plain) and len(placed) == 7 and len(placed[-1]) == 3
    assert routed == [str(p) for p in paths]  # every shard, the first one too (routed before it is read)
    assert placed_batches([atd.SampleBatch({"x": b.a}, len(b), Arr, b.keys) for b in placed]) == 7
    assert all(np.asarray(b.a).flags.writeable and np.asarray(b.a).flags.c_contiguous for b in placed)
    assert [int(x) for b in placed for x in b.label] == list(range(45))


def test_local_samples_of_another_layout_are_read_as_before(tmp_path: Path) -> None:
    @atd.packable
    class Var:
        x: NDArray
        label: int

    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(WIDTH).astype(np.float32) for _ in range(10)]
    xs += [rng.standard_normal(WIDTH + 3).astype(np.float32), rng.standard_normal(WIDTH - 5).astype(np.float32)]
    xs += [rng.standard_normal(WIDTH).astype(np.float32) for _ in range(12)]
    xs += [rng.standard_normal(WIDTH // 2)] * 6  # a shard of float64: the same bytes per array, another header
    xs += [rng.standard_normal(2 * WIDTH).astype(np.float32) for _ in range(6)]  # a shard of larger arrays
    samples = [Var(x=x, label=i) for i, x in enumerate(xs)]
    ds = atd.write_samples(samples, tmp_path / "var.tar", maxcount=12, progress=False)
    ds2 = atd.write_samples(samples[24:30], tmp_path / "f64.tar", maxcount=12, progress=False)
    ds3 = atd.write_samples(samples[30:], tmp_path / "wide.tar", maxcount=12, progress=False)
    paths = [Path(s) for s in ds.list_shards()[:2] + ds2.list_shards() + ds3.list_shards()]
    placed, plain, routed = _local_pair(paths, Var, batch_size=4)
    assert _columns(placed) == _columns(plain) and len(placed) == 9
    assert isinstance(placed[2].x, list)  # the batch with the odd samples is ragged, as an unplaced read gives it
    assert [np.asarray(x).dtype for x in placed[6].x] == [np.float64] * 4  # (a list: the float64 shard and wide)
    assert len(routed) == 4
