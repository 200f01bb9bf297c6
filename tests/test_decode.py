"""The decode stage (atdata_torch._decode): a Decoder turns records into samples (stages run with the sample's RNG
context) and into batches, columnar where it can, record by record where it must; skipped samples go to its
``note`` callback. A placed batch (atdata_torch._placement.PlacedColumns) gets its array from the placement."""

from __future__ import annotations

import io
import pickle
from typing import Any

import msgpack
import numpy as np
import pytest
from numpy.typing import NDArray

import atdata_torch as atd
from atdata_torch._codec import pack_sample
from atdata_torch._decode import Decoder, decode_record, lost, sample_seed
from atdata_torch._placement import MIN_PLACED, PlacedColumns, Placement, learn
from atdata_torch._reader import Record
from atdata_torch.errors import DecodeError

WIDTH = MIN_PLACED // 4  # float32: arrays just large enough to place


@atd.packable
class DecRec:
    x: NDArray[np.float32]
    label: int
    name: str


def _sample(i: int, width: int = 3) -> DecRec:
    return DecRec(x=np.full(width, i, np.float32), label=i, name=f"n{i}")


def _record(i: int, payload: Any = None, *, width: int = 3, ext: str = "msgpack") -> Record:
    data = pack_sample(_sample(i, width)) if payload is None else payload
    return Record("s.tar", f"k{i}", 512 * i, 1024, {ext: memoryview(data)}, 512 * i + 512)


class Notes:
    """A ``note`` callback that keeps what it was given."""

    def __init__(self) -> None:
        self.got: list[tuple[Any, BaseException]] = []

    def __call__(self, report: Any, exc: BaseException) -> None:
        self.got.append((report, exc))


def _decoder(on_error: Any = "raise", stages: tuple[tuple[str, Any], ...] = (), **kw: Any) -> tuple[Decoder, Notes]:
    notes = Notes()
    return Decoder(DecRec, kw.get("sample_type", DecRec), stages, on_error, notes, kw.get("seed", 7)), notes


def test_fast_and_slow_batches_agree() -> None:
    dec, _ = _decoder()
    assert dec.fast
    recs = [_record(i) for i in range(5)]
    fast = dec.fast_batch(recs, None)
    slow = dec.slow_batch(recs, None, list(range(5)), 0)
    assert fast is not None and slow is not None
    assert fast.keys == slow.keys == [f"k{i}" for i in range(5)]
    np.testing.assert_array_equal(fast.x, slow.x)
    assert list(fast.label) == list(slow.label) == list(range(5))
    assert list(fast.name) == [f"n{i}" for i in range(5)]
    assert isinstance(fast.x, np.ndarray) and fast.x.shape == (5, 3)
    # batch() takes the columnar path here, and the per-sample one with stages.
    got = dec.batch(recs, None, list(range(5)), 0)
    assert got is not None and got.keys == fast.keys
    staged, _ = _decoder(stages=(("filter", lambda s: s.label % 2 == 0),))
    assert not staged.fast
    evens = staged.batch(recs, None, list(range(5)), 0)
    assert evens is not None and list(evens.label) == [0, 2, 4]


def test_ragged_and_odd_records_fall_back_per_record() -> None:
    dec, _ = _decoder()
    ragged = [_record(0), _record(1, width=4)]  # the column does not stack: decoded record by record
    b = dec.fast_batch(ragged, None)
    assert b is not None and isinstance(b.x, list) and [len(v) for v in b.x] == [3, 4]
    # A record of per-field members (not one msgpack payload) goes through the per-record decoder.
    s = _sample(2)
    members: dict[str, bytes | memoryview] = {
        "x.npy": memoryview(_npy(s.x)),
        "label.json": memoryview(b"2"),
        "name.txt": memoryview(b"n2"),
    }
    split = Record("s.tar", "k2", 0, 0, members, 512)
    b = dec.fast_batch([_record(0), split], None)
    assert b is not None and b.keys == ["k0", "k2"] and list(b.label) == [0, 2]


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


@pytest.mark.parametrize("how", ["fast", "slow", "samples"])
def test_skipped_samples_go_to_note(how: str) -> None:
    dec, notes = _decoder("skip")
    recs = [_record(0), _record(1, b"\x81\xa1x\xc0"), _record(2)]  # x is nil: does not decode
    report = object()
    if how == "fast":
        b = dec.fast_batch(recs, report)
        keys = b.keys if b is not None else []
    elif how == "slow":
        b = dec.slow_batch(recs, report, [0, 1, 2], 0)
        keys = b.keys if b is not None else []
    else:
        keys = [k for k, _ in dec.samples(recs, report, [0, 1, 2], 0)]
    assert keys == ["k0", "k2"]
    assert len(notes.got) == 1 and notes.got[0][0] is report
    exc = notes.got[0][1]
    assert isinstance(exc, DecodeError) and exc.key == "k1" and exc.shard == "s.tar" and lost(exc) == 1
    raising, _ = _decoder("raise")
    with pytest.raises(DecodeError, match="k1"):
        raising.fast_batch(recs, None)
    # Nothing left: no batch.
    assert dec.fast_batch(recs[1:2], report) is None and dec.slow_batch(recs[1:2], report, [1], 0) is None


def test_decode_record_names_the_record() -> None:
    with pytest.raises(DecodeError) as info:
        decode_record(_record(3, msgpack.packb({"label": 1})), DecRec)
    assert info.value.key == "k3" and info.value.shard == "s.tar" and info.value.offset == 1536


def test_stages_see_the_sample_context() -> None:
    seen: list[int] = []

    def mark(s: DecRec) -> DecRec:
        seen.append(sample_seed())
        return s

    dec, _ = _decoder(stages=(("map", mark),), sample_type=Any)
    out = list(dec.samples([_record(0), _record(1)], None, [10, 11], 2))
    assert [k for k, _ in out] == ["k0", "k1"]
    again, _ = _decoder(stages=(("map", mark),), sample_type=Any)
    list(again.samples([_record(0)], None, [10], 2))
    assert seen[0] == seen[2] != seen[1]
    with pytest.raises(RuntimeError):
        sample_seed()  # only while a sample's stages run
    b = dec.slow_batch([_record(0)], None, [0], 0)
    assert b is not None and b.keys == ["k0"]  # after map(): the type the samples have


def test_empty_batch_has_the_fields() -> None:
    dec, _ = _decoder()
    b = dec.empty_batch()
    assert len(b) == 0 and set(b.fields) == {"x", "label", "name"}
    untyped = Decoder(atd.DictSample, atd.DictSample, (), "raise", Notes())
    assert not untyped.fast and len(untyped.empty_batch()) == 0


# ---------------------------------------------------------------------------------------------------- placement
def _placed(n: int) -> tuple[Placement, list[bytes]]:
    """A placement of one batch of ``n`` rows, with the layout of these samples; the payloads."""
    payloads = [pack_sample(_sample(i, WIDTH)) for i in range(n)]
    layout = learn(payloads[0], {s.name: s for s in DecRec.__atdata_fields__})  # type: ignore[attr-defined]
    assert layout is not None and layout.field == "x"
    placement = Placement()
    placement.layout = layout
    placement._rows[0] = n
    placement._keep = 2
    return placement, payloads


def test_placed_rows_are_the_batch_array() -> None:
    placement, payloads = _placed(4)
    layout = placement.layout
    assert layout is not None
    head = len(layout.prefix) + layout.nbytes
    recs, slots = [], []
    for i, p in enumerate(payloads):
        if i == 2:  # its bytes were in before the routes were set: a whole payload, copied into its row
            recs.append(_record(i, p))
            slots.append(~i)
            continue
        placement.dest(0, i)[:] = memoryview(p)[len(layout.prefix) : head]  # what the download received
        recs.append(_record(i, p[head:]))
        slots.append(i)
    dec, _ = _decoder()
    placed = dec.placed(placement, 0, slots)
    assert isinstance(placed, PlacedColumns) and placed.field == "x"
    b = dec.fast_batch(recs, None, placed)
    assert b is not None and b.keys == [f"k{i}" for i in range(4)] and list(b.label) == [0, 1, 2, 3]
    assert b.x.shape == (4, WIDTH)
    np.testing.assert_array_equal(b.x[:, 0], [0, 1, 2, 3])
    assert b.x.base is not None  # the placement's pooled array, not a stacked copy
    assert dec.placed(None, 0, slots) is None and dec.placed(placement, 0, None) is None


def test_a_placed_record_whose_rest_is_broken_is_repaired_and_named() -> None:
    placement, payloads = _placed(3)
    layout = placement.layout
    assert layout is not None
    head = len(layout.prefix) + layout.nbytes
    recs = []
    for i, p in enumerate(payloads):
        placement.dest(0, i)[:] = memoryview(p)[len(layout.prefix) : head]
        tail = p[head:] if i != 1 else b"\xc1" * (len(p) - head)  # 0xc1: never valid msgpack
        recs.append(_record(i, tail))
    dec, notes = _decoder("skip")
    b = dec.fast_batch(recs, "r", dec.placed(placement, 0, [0, 1, 2]))
    assert b is not None and b.keys == ["k0", "k2"] and b.x.shape == (2, WIDTH)
    np.testing.assert_array_equal(b.x[:, 0], [0, 2])
    assert len(notes.got) == 1 and isinstance(notes.got[0][1], DecodeError) and notes.got[0][1].key == "k1"


def test_a_placed_batch_that_does_not_stack_is_decoded_record_by_record() -> None:
    placement, payloads = _placed(2)
    layout = placement.layout
    assert layout is not None
    head = len(layout.prefix) + layout.nbytes
    placement.dest(0, 0)[:] = memoryview(payloads[0])[len(layout.prefix) : head]
    odd = pack_sample(_sample(1, WIDTH // 2))  # another shape: not the layout's, copied rows cannot take it
    recs = [_record(0, payloads[0][head:]), _record(1, odd)]
    dec, _ = _decoder()
    b = dec.fast_batch(recs, None, dec.placed(placement, 0, [0, ~1]))
    assert b is not None and isinstance(b.x, list) and [len(v) for v in b.x] == [WIDTH, WIDTH // 2]
    assert float(b.x[0][0]) == 0.0 and float(b.x[1][0]) == 1.0


def test_batch_with_nothing_placed_lets_the_array_go() -> None:
    placement, payloads = _placed(2)
    dec, _ = _decoder()
    b = dec.batch([_record(i, p) for i, p in enumerate(payloads)], None, [0, 1], 0, placement, 0, [~0, ~1])
    assert b is not None and b.x.shape == (2, WIDTH)
    assert 0 in placement._taken and placement.take(0, make=False) is None


def test_a_pipelines_decoder_follows_its_settings(tmp_path: Any) -> None:
    ds = atd.write_samples([_sample(i) for i in range(4)], tmp_path / "d.tar", progress=False)
    first = ds.ordered(batch_size=2)._decoder()
    assert first.raise_errors
    pipe = ds.ordered(batch_size=2, on_error="skip")  # a pipeline's options are frozen: another pipeline
    assert pipe._decoder() is pipe._decoder() and not pipe._decoder().raise_errors
    assert [list(b.label) for b in pipe] == [[0, 1], [2, 3]]
    back = pickle.loads(pickle.dumps(pipe))  # as to a DataLoader worker: the cached decoder travels too
    assert [list(b.label) for b in back] == [[0, 1], [2, 3]]
