"""A bounded, seeded run of the shard/sidecar fuzzer (tests/_fuzz.py); the long run is benchmarks/fuzz.py."""

from __future__ import annotations

import os
import tempfile

import _fuzz

SEED = 15
INPUTS = int(os.environ.get("ATDATA_FUZZ_INPUTS", "2000"))


def test_seeds_read_back_exactly() -> None:
    seeds = _fuzz.build_seeds()  # asserts each seed reads back as written
    assert {s.kind for s in seeds} == {"typed", "dict", "wds"}
    inp = _fuzz.make_input(seeds, SEED, 7)
    again = _fuzz.make_input(seeds, SEED, 7)
    assert (inp.shard, inp.sidecar, inp.desc) == (again.shard, again.sidecar, again.desc)


def test_oracle_judges_an_intact_shard_clean() -> None:
    seeds = _fuzz.build_seeds()
    sd = seeds[0]
    inp = _fuzz.Input(
        0,
        sd.name,
        "none",
        "intact",
        sd.shard,
        sd.sidecar,
        set(),
        len(sd.spans),
        sd.expected,
        [(m, "typed") for m in _fuzz.MODES] + [("skip", "dict")],
    )
    with tempfile.TemporaryDirectory() as tmp:
        assert {r.outcome for r in _fuzz.run_input(inp, tmp, 0)} == {"clean"}


def test_packed_seeds_are_judged_per_sample() -> None:
    # The compact layout's seeds: several samples per span, each read intact and clean.
    seeds = [s for s in _fuzz.build_seeds() if s.groups is not None]
    assert {s.name for s in seeds} == {"packed7", "packed7-nosidecar", "packeddict5"}
    sd = next(s for s in seeds if s.name == "packed7")
    assert sd.groups == [3, 3, 1] and sd.samples_of({1}) == {3, 4, 5}
    inp = _fuzz.Input(0, sd.name, "none", "intact", sd.shard, sd.sidecar, set(), 7, sd.expected, [("skip", "typed")])
    with tempfile.TemporaryDirectory() as tmp:
        assert {r.outcome for r in _fuzz.run_input(inp, tmp, 0)} == {"clean"}


def test_fuzz_bounded_run_has_no_bad_outcomes() -> None:
    with tempfile.TemporaryDirectory() as out:
        rep = _fuzz.run_fuzz(seed=SEED, inputs=INPUTS, jobs=2, out=out)
        assert rep.bad == 0, "\n" + rep.markdown()
