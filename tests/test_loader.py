"""The loader (``ds.loader()``, ``ds.ordered()/shuffled()`` under DataLoader workers): equal per-rank batch
counts, one global order for every topology, epochs that reach workers, an elastic mid-epoch resume,
per-sample randomness, and transforms that run in the workers.

Every rank of a topology is played in this one process (``rank=`` / ``world_size=``); the workers are real
DataLoader worker processes. The reference order of an epoch comes straight from ``iter_epoch_order`` (the
pure function of seed, epoch and shard sizes that the design promises), not from the loader.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from torch.utils.data import DataLoader

import atdata_torch as atd
from atdata_torch._order import iter_epoch_order

SEED = 1234

# Topologies with more workers than this machine's cores are the point of some tests.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


@atd.packable
class LoaderRec:
    x: NDArray[np.float32]
    label: int


@atd.packable
class LoaderLabelView:
    label: int
    lens_pid: int


@atd.packable
class LoaderPids:
    label: int
    lens_pid: int
    map_pid: int


@atd.packable
class LoaderDraw:
    label: int
    draw: float
    seed: int


@atd.lens
def loader_label_view(s: LoaderRec) -> LoaderLabelView:
    return LoaderLabelView(label=int(s.label), lens_pid=os.getpid())


def _add_map_pid(v: LoaderLabelView) -> LoaderPids:
    return LoaderPids(label=v.label, lens_pid=v.lens_pid, map_pid=os.getpid())


def _draw(s: LoaderRec) -> LoaderDraw:
    return LoaderDraw(label=int(s.label), draw=float(atd.sample_rng().random()), seed=atd.sample_seed())


def _key(label: int) -> str:
    return f"s{label:05d}"


# ------------------------------------------------------------------------------------------------
# datasets: one shard file per entry of ``counts``, labels numbered across shards, key "s<label>"


class Datasets:
    """Writes (once per module) datasets with the given shard sample counts."""

    def __init__(self, root: Path, pack: int | None = None) -> None:
        self.root = root
        self.pack = pack  # the compact layout: this many samples per tar member
        self._cache: dict[tuple[int, ...], atd.Dataset[LoaderRec]] = {}

    def __call__(self, counts: Sequence[int]) -> atd.Dataset[LoaderRec]:
        counts = tuple(counts)
        ds = self._cache.get(counts)
        if ds is None:
            d = self.root / ("c" + "-".join(map(str, counts)))
            d.mkdir()
            paths, label = [], 0
            for i, c in enumerate(counts):
                recs = [LoaderRec(x=np.full(2, label + j, np.float32), label=label + j) for j in range(c)]
                path = d / f"part-{i:04d}.tar"
                atd.write_samples(recs, path, key=lambda s, _i: _key(s.label), progress=False, pack=self.pack)
                paths.append(str(path))
                label += c
            ds = self._cache[counts] = atd.Dataset[LoaderRec](paths)
        return ds


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Datasets:
    return Datasets(tmp_path_factory.mktemp("loader"))


@pytest.fixture(scope="module", params=[None, 3], ids=["default-layout", "packed"])
def layouts(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Datasets:
    """``datasets`` in the default layout and in the compact one (3 samples per tar member): the tests of ranks,
    workers and resume take both."""
    return Datasets(tmp_path_factory.mktemp("layout"), pack=request.param)


def _counts(ds: atd.Dataset[Any]) -> list[int]:
    return [ix.count for ix in ds.shard_indexes()]


def reference(ds: atd.Dataset[Any], *, shuffle: bool, epoch: int, seed: int = SEED) -> list[str]:
    """The epoch's global order of keys, from the order function alone."""
    counts = _counts(ds)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    out: list[str] = []
    for shard, idx in iter_epoch_order(counts, seed=seed, epoch=epoch, shuffle=shuffle):
        out.extend(_key(int(v)) for v in (first[shard] + idx).tolist())
    return out


def expected_stream(ref: Sequence[str], policy: str, global_batch: int, start: int = 0) -> list[str]:
    """What all ranks together yield, in global step order, from global position ``start``."""
    n = len(ref)
    rem = n - start
    if rem <= 0:
        return []
    if policy == "exact":
        return list(ref[start:])
    if policy == "drop":
        return list(ref[start : start + rem // global_batch * global_batch])
    total = -(-rem // global_batch) * global_batch
    return [ref[(start + i) % n] for i in range(total)]


# ------------------------------------------------------------------------------------------------
# playing topologies


def _loaders(ds: atd.Dataset[Any], world: int, workers: int, batch: int, **kw: Any) -> list[atd.Loader]:
    """One loader per rank of a ``world``-rank topology."""
    kw.setdefault("seed", SEED)
    return [ds.loader(batch_size=batch, rank=r, world_size=world, num_workers=workers, **kw) for r in range(world)]


def _batches(loader: Iterable[Any]) -> list[list[str]]:
    """One pass: the keys of each batch (a for loop: ``list()`` would also call ``len()``)."""
    out = []
    for b in loader:
        out.append(list(b.keys))
    return out


def _take(loader: atd.Loader, k: int) -> tuple[list[list[str]], dict[str, Any]]:
    """The first ``k`` batches of a pass, then the loader's state at that point."""
    out: list[list[str]] = []
    it = iter(loader)
    for _ in range(k):
        out.append(list(next(it).keys))
    state = loader.state_dict()
    it.close()  # type: ignore[attr-defined]
    return out, state


def interleave(per_rank: Sequence[Sequence[Sequence[str]]]) -> list[str]:
    """The global stream: step by step, rank by rank."""
    out: list[str] = []
    for step in range(max((len(p) for p in per_rank), default=0)):
        for p in per_rank:
            if step < len(p):
                out.extend(p[step])
    return out


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # type: ignore[no-any-return]


def _context(name: str) -> Any:
    ctx = multiprocessing.get_context(name)
    if name == "forkserver":
        # The server imports torch once; its children (the workers) then start in a fraction of a second.
        ctx.set_forkserver_preload(["atdata_torch", __name__])  # type: ignore[attr-defined]
    return ctx


# ------------------------------------------------------------------------------------------------
# equal batch counts, len(), the global stream

# (shard counts, ranks, workers, batch size per rank)
COUNT_CASES = [
    ((5,), 3, 2, 2),  # more ranks than shards
    ((7, 13, 5), 2, 3, 3),  # more workers than shards per rank
    ((3, 3), 2, 4, 1),
    ((1, 1, 1), 5, 2, 1),  # more ranks than samples: one global step is bigger than the epoch
    ((10, 2, 17, 4, 9), 3, 2, 4),
    ((30,), 1, 3, 7),
    ((4, 4, 4, 4, 4, 4, 4, 4), 4, 0, 5),
]


@pytest.mark.parametrize("policy", ["drop", "pad", "exact"])
@pytest.mark.parametrize(("counts", "world", "workers", "batch"), COUNT_CASES)
def test_every_rank_yields_the_same_number_of_batches(
    layouts: Datasets, counts: tuple[int, ...], world: int, workers: int, batch: int, policy: str
) -> None:
    ds = layouts(counts)
    n = sum(counts)
    loaders = _loaders(ds, world, workers, batch, last_batch=policy)
    per_rank = [_batches(L) for L in loaders]
    yielded = [len(p) for p in per_rank]
    assert [len(L) for L in loaders] == yielded  # len() is exact, per rank
    g = batch * world
    if policy == "drop":
        assert yielded == [n // g] * world
    elif policy == "pad":
        assert yielded == [-(-n // g)] * world
        assert all(len(b) == batch for p in per_rank for b in p)  # padded batches are full
    else:
        keys = [k for p in per_rank for b in p for k in b]
        assert Counter(keys) == Counter(_key(i) for i in range(n))  # every sample exactly once
        assert max(yielded) - min(yielded) <= 1
    ref = reference(ds, shuffle=True, epoch=0)
    assert interleave(per_rank) == expected_stream(ref, policy, g)


@pytest.mark.parametrize(
    ("drop_last", "world", "policy"),
    [
        (True, 1, "drop"),
        (True, 3, "drop"),
        (False, 1, "exact"),
        (False, 3, "pad"),
        (None, 1, "exact"),
        (None, 2, "pad"),
    ],
)
def test_default_last_batch_policy(datasets: Datasets, drop_last: bool | None, world: int, policy: str) -> None:
    ds = datasets((7, 13, 5))
    loader = ds.loader(batch_size=2, rank=0, world_size=world, drop_last=drop_last)
    assert loader.pipeline.last_batch == policy
    assert loader.pipeline.drop_last == (policy == "drop")
    # last_batch wins over drop_last
    assert (
        ds.loader(batch_size=2, rank=0, world_size=world, drop_last=drop_last, last_batch="exact").pipeline.last_batch
        == "exact"
    )
    assert ds.shuffled(2, rank=0, world_size=world, drop_last=drop_last).last_batch == policy


@pytest.mark.parametrize("policy", ["drop", "pad", "exact"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_global_stream_is_the_same_for_every_topology(layouts: Datasets, shuffle: bool, policy: str) -> None:
    ds = layouts((17, 9, 24, 11))
    ref = reference(ds, shuffle=shuffle, epoch=3)
    expected = expected_stream(ref, policy, 12)
    # (ranks, workers): per-rank batch size 12 // ranks, global batch 12 throughout
    for world, workers in [(1, 0), (1, 4), (2, 2), (3, 1)]:
        loaders = _loaders(ds, world, workers, 12 // world, shuffle=shuffle, last_batch=policy)
        for L in loaders:
            L.set_epoch(3)
        per_rank = [_batches(L) for L in loaders]
        assert interleave(per_rank) == expected, (world, workers)


@pytest.mark.parametrize("policy", ["drop", "pad", "exact"])
def test_unbatched_pipeline_ranks_and_workers(layouts: Datasets, policy: str) -> None:
    ds = layouts((7, 13, 5))
    n = 25
    ref = reference(ds, shuffle=True, epoch=0)
    for world, workers in [(1, 2), (3, 2), (4, 0)]:
        per_rank: list[list[list[str]]] = []
        for r in range(world):
            pipe = ds.shuffled(seed=SEED, rank=r, world_size=world, last_batch=policy)
            keys = [_key(int(s.label)) for s in DataLoader(pipe, batch_size=None, num_workers=workers)]
            assert len(pipe) == len(keys)
            per_rank.append([[k] for k in keys])
        counts = [len(p) for p in per_rank]
        if policy == "drop":
            assert counts == [n // world] * world
        elif policy == "pad":
            assert counts == [-(-n // world)] * world
        assert interleave(per_rank) == expected_stream(ref, policy, world), (world, workers)


@pytest.mark.parametrize("batch", [None, 3])
def test_pipeline_resume_under_workers(layouts: Datasets, batch: int | None) -> None:
    """``Pipeline.resume(epoch, position)`` (what the loader uses) reaches DataLoader workers; then the next pass
    is the following epoch from its start."""
    ds = layouts((7, 13, 5))
    world = 2
    g = (batch or 1) * world
    per_rank, following = [], []
    for r in range(world):
        pipe = ds.shuffled(batch, seed=SEED, rank=r, world_size=world, last_batch="exact")
        loader = DataLoader(pipe, batch_size=None, num_workers=2, persistent_workers=True)
        pipe.resume(1, 7)
        per_rank.append(_unbatched_or_batched(loader))
        following.append(_unbatched_or_batched(loader))
    assert interleave(per_rank) == expected_stream(reference(ds, shuffle=True, epoch=1), "exact", g, 7)
    assert interleave(following) == reference(ds, shuffle=True, epoch=2)


def _unbatched_or_batched(loader: Iterable[Any]) -> list[list[str]]:
    out = []
    for item in loader:
        out.append(list(item.keys) if isinstance(item, atd.SampleBatch) else [_key(int(item.label))])
    return out


# ------------------------------------------------------------------------------------------------
# epochs


def test_loader_epochs_advance_and_set_epoch_picks_one(datasets: Datasets) -> None:
    ds = datasets((11, 7, 9))
    for persistent in (False, True):
        loader = ds.loader(batch_size=4, num_workers=2, persistent_workers=persistent, seed=SEED)
        assert loader.epoch == 0
        runs = []
        for e, expected in zip([None, None, 0, 5, None], [0, 1, 0, 5, 6], strict=True):
            if e is not None:
                loader.set_epoch(e)
                assert loader.epoch == e
            runs.append(interleave([_batches(loader)]))
            assert loader.epoch == expected  # the epoch of the pass just run
            assert runs[-1] == reference(ds, shuffle=True, epoch=expected), (persistent, e)
        assert runs[0] != runs[1]
        assert loader.state_dict()["epoch"] == 7


@pytest.mark.parametrize(
    ("context", "persistent", "plan"),
    [
        ("fork", False, [None, None, 0, 5, None]),
        ("fork", True, [None, None, 0, 5, None]),
        ("forkserver", False, [None, 5, None]),
        ("forkserver", True, [None, None, 0, 5, None]),
        ("spawn", True, [None, None, 0, 5, None]),
        # spawn with fresh workers per pass costs two interpreter starts (a torch import each) per pass, about
        # 6 s on 2 cores; it takes the same path as forkserver (the pipeline is pickled into each new worker).
    ],
)
def test_epoch_reaches_dataloader_workers(
    datasets: Datasets, context: str, persistent: bool, plan: list[int | None]
) -> None:
    """A plain DataLoader over a pipeline: the epoch advances per pass inside the workers, and set_epoch on
    the main process's pipeline reaches them (persistent ones too). Workers never repeat each other."""
    ds = datasets((11, 7, 9))
    pipe = ds.shuffled(4, seed=SEED)
    loader = DataLoader(
        pipe,
        batch_size=None,
        num_workers=2,
        persistent_workers=persistent,
        multiprocessing_context=_context(context),
    )
    epoch = 0
    for e in plan:
        if e is not None:
            pipe.set_epoch(e)
            epoch = e
        keys = interleave([_batches(loader)])
        assert len(set(keys)) == len(keys) == 27  # the two workers share no batch and no sample
        assert keys == reference(ds, shuffle=True, epoch=epoch), (e, epoch)
        epoch += 1


def test_same_epoch_same_order_different_epoch_different_order(datasets: Datasets) -> None:
    ds = datasets((40, 40, 40))
    a = ds.shuffled(8, seed=SEED)
    b = ds.shuffled(8, seed=SEED)
    first = [interleave([_batches(a)]) for _ in range(3)]
    second = [interleave([_batches(b)]) for _ in range(3)]
    assert first == second
    assert len({tuple(k) for k in first}) == 3
    a.set_epoch(1)
    assert interleave([_batches(a)]) == first[1]
    other_seed = ds.shuffled(8, seed=SEED + 1)
    assert interleave([_batches(other_seed)]) != first[0]


# ------------------------------------------------------------------------------------------------
# mid-epoch resume, elastic


DATASET_SHAPES = [(7, 13, 5), (4,), (3, 11, 2, 9)]
TOPOLOGIES = [(1, 0), (1, 3), (2, 0), (2, 2), (3, 1)]  # (ranks, workers per rank)


@settings(max_examples=12, deadline=None, database=None)
@given(data=st.data())
def test_elastic_resume(datasets: Datasets, data: st.DataObject) -> None:
    counts = data.draw(st.sampled_from(DATASET_SHAPES), label="counts")
    shuffle = data.draw(st.booleans(), label="shuffle")
    policy = data.draw(st.sampled_from(["drop", "pad", "exact"]), label="policy")
    epoch = data.draw(st.sampled_from([0, 2]), label="epoch")
    world_a, workers_a = data.draw(st.sampled_from(TOPOLOGIES), label="topology A")
    batch_a = data.draw(st.integers(1, 4), label="batch A")
    world_b, workers_b = data.draw(st.sampled_from(TOPOLOGIES), label="topology B")
    g_a = batch_a * world_a
    same_global = data.draw(st.booleans(), label="same global batch")
    fits = same_global and g_a % world_b == 0
    batch_b = g_a // world_b if fits else data.draw(st.integers(1, 4), label="batch B")

    def pick(steps: int) -> int:
        return data.draw(st.sampled_from([0, steps // 2, steps]) | st.integers(0, steps), label="k")

    check_elastic(
        datasets(counts), shuffle, policy, epoch, (world_a, workers_a, batch_a), (world_b, workers_b, batch_b), pick
    )


@pytest.mark.parametrize(
    ("counts", "shuffle", "policy", "a", "b", "stop"),
    [
        ((7, 13, 5), True, "exact", (1, 2, 6), (2, 1, 3), "start"),
        ((7, 13, 5), True, "exact", (1, 2, 6), (2, 1, 3), "mid"),
        ((7, 13, 5), True, "exact", (1, 2, 6), (2, 1, 3), "end"),
        ((10, 2, 17, 4, 9), True, "pad", (3, 1, 2), (2, 2, 4), "mid"),  # global batch 6 -> 8
        ((10, 2, 17, 4, 9), False, "drop", (2, 0, 2), (1, 3, 5), "end"),  # 4 -> 5
        ((10, 2, 17, 4, 9), True, "exact", (3, 0, 1), (1, 0, 7), "mid"),
    ],
)
def test_elastic_resume_cases(
    layouts: Datasets,
    counts: tuple[int, ...],
    shuffle: bool,
    policy: str,
    a: tuple[int, int, int],
    b: tuple[int, int, int],
    stop: str,
) -> None:
    def pick(steps: int) -> int:
        return {"start": 0, "mid": steps // 2, "end": steps}[stop]

    check_elastic(layouts(counts), shuffle, policy, 1, a, b, pick)


def check_elastic(
    ds: atd.Dataset[Any],
    shuffle: bool,
    policy: str,
    epoch: int,
    a: tuple[int, int, int],
    b: tuple[int, int, int],
    pick_k: Callable[[int], int],
) -> None:
    """Topology A (ranks, workers, per-rank batch) stops after ``pick_k(steps)`` steps; topology B resumes."""
    world_a, workers_a, batch_a = a
    world_b, workers_b, batch_b = b
    g_a, g_b = batch_a * world_a, batch_b * world_b
    n = len(ds)
    refs = {e: reference(ds, shuffle=shuffle, epoch=e) for e in (epoch, epoch + 1, epoch + 2)}
    kw: dict[str, Any] = {"shuffle": shuffle, "last_batch": policy}

    # 1. the uninterrupted epoch on topology A
    loaders_a = _loaders(ds, world_a, workers_a, batch_a, **kw)
    for L in loaders_a:
        L.set_epoch(epoch)
    full = [_batches(L) for L in loaders_a]
    stream_a = interleave(full)
    assert stream_a == expected_stream(refs[epoch], policy, g_a)
    steps = len(full[0])

    # 2. topology A again, stopped after k steps; every rank's state is the same global state
    k = pick_k(steps)
    finished = k == steps
    states = []
    prefix = []
    for L, ran in zip(loaders_a, full, strict=True):
        L.set_epoch(epoch)
        got, state = _take(L, min(k, len(ran)))
        prefix.append(got)
        if k < len(ran) or len(ran) == steps:
            states.append(state)
    state = states[0]
    assert all(s == state for s in states)
    assert interleave(prefix) == stream_a[: sum(len(b) for p in prefix for b in p)]
    if finished:
        assert (state["epoch"], state["position"]) == (epoch + 1, 0)
    else:
        assert (state["epoch"], state["position"]) == (epoch, k * g_a)
    assert state["global_batch_size"] == g_a
    assert state["seed"] == SEED and state["shuffle"] == shuffle

    # 3. a torch.save / torch.load(weights_only=True) round trip, then topology B resumes
    state = _round_trip(state)
    loaders_b = _loaders(ds, world_b, workers_b, batch_b, **kw)
    for L in loaders_b:
        L.load_state_dict(state)
        # a loaded, not yet iterated loader reports the pending state (with its own global batch size)
        assert L.state_dict() == {**state, "global_batch_size": g_b}
    rest = [_batches(L) for L in loaders_b]
    stream_b = interleave(rest)
    if finished:
        expected = expected_stream(refs[epoch + 1], policy, g_b)
    else:
        expected = expected_stream(refs[epoch], policy, g_b, k * g_a)
    assert Counter(stream_b) == Counter(expected)
    if policy == "exact" and not finished:
        assert Counter(stream_b) == Counter(stream_a[k * g_a :])  # the rest of the uninterrupted epoch
        assert Counter(stream_a[: k * g_a] + stream_b) == Counter(_key(i) for i in range(n))
    if g_b == g_a:
        assert stream_b == expected
        if not finished:
            assert stream_b == stream_a[k * g_a :]
    for L in loaders_b:
        assert L.state_dict()["position"] == 0  # the resumed pass completed

    # 4. the pass after the resumed one is the next epoch, whole
    following = interleave([_batches(L) for L in loaders_b])
    assert following == expected_stream(refs[epoch + (2 if finished else 1)], policy, g_b)


def test_resume_with_persistent_workers(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5))
    ref1, ref2 = reference(ds, shuffle=True, epoch=1), reference(ds, shuffle=True, epoch=2)
    loader = ds.loader(batch_size=3, num_workers=2, persistent_workers=True, seed=SEED, last_batch="exact")
    assert interleave([_batches(loader)]) == reference(ds, shuffle=True, epoch=0)  # workers now running

    # a state saved elsewhere (another worker count), loaded into the running loader
    other = ds.loader(batch_size=3, num_workers=0, seed=SEED, last_batch="exact")
    other.set_epoch(1)
    _, state = _take(other, 4)
    loader.load_state_dict(_round_trip(state))
    assert interleave([_batches(loader)]) == ref1[12:]
    assert interleave([_batches(loader)]) == ref2

    # stop the loader itself mid-epoch, then resume it from its own state
    loader.set_epoch(1)
    got, state = _take(loader, 3)
    assert interleave([got]) == ref1[:9]
    loader.load_state_dict(state)
    assert interleave([_batches(loader)]) == ref1[9:]
    assert loader.state_dict()["epoch"] == 2


def test_chained_resumes_across_three_topologies(layouts: Datasets) -> None:
    """1 rank x 0 workers -> 2 ranks x 2 workers -> 3 ranks x 1 worker, global batch 6 throughout."""
    ds = layouts((10, 2, 17, 4, 9))
    ref = reference(ds, shuffle=True, epoch=4)
    first = ds.loader(batch_size=6, num_workers=0, seed=SEED, last_batch="exact")
    first.set_epoch(4)
    got_a, state = _take(first, 2)
    got_b = []
    states = []
    for r in range(2):
        loader = ds.loader(batch_size=3, rank=r, world_size=2, num_workers=2, seed=SEED, last_batch="exact")
        loader.load_state_dict(_round_trip(state))
        got, st_r = _take(loader, 3)
        got_b.append(got)
        states.append(st_r)
    assert states[0] == states[1]
    assert (states[0]["epoch"], states[0]["position"]) == (4, 12 + 18)
    rest = []
    for r in range(3):
        loader = ds.loader(batch_size=2, rank=r, world_size=3, num_workers=1, seed=SEED, last_batch="exact")
        loader.load_state_dict(_round_trip(states[0]))
        rest.append(_batches(loader))
    assert interleave([got_a]) + interleave(got_b) + interleave(rest) == ref


def _keep_unless_multiple_of_3(s: LoaderRec) -> bool:
    return int(s.label) % 3 != 0


def test_resume_after_a_filter_that_empties_batches(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5)).filter(_keep_unless_multiple_of_3)
    kw: dict[str, Any] = {"batch_size": 1, "shuffle": False, "last_batch": "exact"}
    full = interleave([_batches(ds.loader(**kw))])
    got, state = _take(ds.loader(**kw), 3)  # labels 1, 2, 4: positions 0 .. 4 consumed
    resumed = ds.loader(**kw)
    resumed.load_state_dict(state)
    assert interleave([got]) + interleave([_batches(resumed)]) == full


def test_filter_keeps_the_order_with_workers(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5)).filter(_keep_unless_multiple_of_3)
    kw: dict[str, Any] = {"batch_size": 1, "shuffle": False, "last_batch": "exact"}
    assert interleave([_batches(ds.loader(num_workers=2, **kw))]) == interleave([_batches(ds.loader(**kw))])


def test_state_is_small_and_global(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5))
    loader = ds.loader(batch_size=2, rank=1, world_size=2, num_workers=2, seed=SEED)
    _, state = _take(loader, 2)
    assert set(state) == {"version", "seed", "shuffle", "epoch", "position", "global_batch_size", "fingerprint"}
    assert state["position"] == 8
    assert state["global_batch_size"] == 4
    assert _round_trip(state) == state


def test_state_from_another_dataset_or_seed_is_refused(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5))
    other = datasets((7, 13, 6))
    _, state = _take(other.loader(batch_size=2, seed=SEED), 1)
    loader = ds.loader(batch_size=2, seed=SEED)
    with pytest.raises(atd.LoaderStateError, match="another dataset"):
        loader.load_state_dict(state)
    _, state = _take(ds.loader(batch_size=2, seed=SEED + 1), 1)
    with pytest.raises(atd.LoaderStateError, match="seed"):
        loader.load_state_dict(state)
    _, state = _take(ds.loader(batch_size=2, seed=SEED, shuffle=False), 1)
    with pytest.raises(atd.LoaderStateError):
        loader.load_state_dict(state)
    # the refused loads left the loader as it was: a fresh first epoch
    assert interleave([_batches(loader)]) == reference(ds, shuffle=True, epoch=0)


def _good_state(ds: atd.Dataset[Any]) -> dict[str, Any]:
    return _take(ds.loader(batch_size=2, seed=SEED), 1)[1]


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "not a state",
        [1, 2, 3],
        {},
        {"foo": 1},
        {"_snapshot": {}, "_steps_since_snapshot": 0},  # a plain StatefulDataLoader's state
        "missing-epoch",
        "position-not-a-number",
        "epoch-none",
        "negative-position",
        "version-from-the-future",
    ],
)
def test_garbage_state_raises_loader_state_error(datasets: Datasets, garbage: Any) -> None:
    ds = datasets((7, 13, 5))
    good = _good_state(ds)
    if garbage == "missing-epoch":
        garbage = {k: v for k, v in good.items() if k != "epoch"}
    elif garbage == "position-not-a-number":
        garbage = {**good, "position": "abc"}
    elif garbage == "epoch-none":
        garbage = {**good, "epoch": None}
    elif garbage == "negative-position":
        garbage = {**good, "position": -4}
    elif garbage == "version-from-the-future":
        garbage = {**good, "version": 99}
    loader = ds.loader(batch_size=2, seed=SEED)
    with pytest.raises(atd.LoaderStateError):
        loader.load_state_dict(garbage)
    assert interleave([_batches(loader)]) == reference(ds, shuffle=True, epoch=0)


# ------------------------------------------------------------------------------------------------
# per-sample randomness


def _draws(ds: atd.Dataset[Any], world: int, workers: int, epoch: int) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    mapped = ds.map(_draw)
    for r in range(world):
        loader = mapped.loader(
            batch_size=6 // world, rank=r, world_size=world, num_workers=workers, seed=SEED, last_batch="exact"
        )
        loader.set_epoch(epoch)
        for b in loader:
            assert list(b.keys) == [_key(v) for v in b.label]
            for key, draw, seed in zip(b.keys, b.draw, b.seed, strict=True):
                assert key not in out
                out[key] = (draw, seed)
    return out


def test_sample_rng_is_per_sample_reproducible_and_topology_free(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5))
    base = _draws(ds, 1, 0, epoch=0)
    assert sorted(base) == [_key(i) for i in range(25)]
    assert len({d for d, _ in base.values()}) == 25  # different per sample
    assert len({s for _, s in base.values()}) == 25
    assert _draws(ds, 2, 2, epoch=0) == base  # another topology
    assert _draws(ds, 3, 1, epoch=0) == base
    assert _draws(ds, 1, 0, epoch=0) == base  # another run
    epoch1 = _draws(ds, 2, 1, epoch=1)
    assert all(epoch1[k][0] != base[k][0] for k in base)  # different per epoch


def test_sample_rng_outside_iteration_raises(datasets: Datasets) -> None:
    with pytest.raises(RuntimeError, match="inside map"):
        atd.sample_rng()
    with pytest.raises(RuntimeError):
        atd.sample_seed()
    ds = datasets((7, 13, 5))
    _draws(ds, 1, 0, epoch=0)  # iterated in this process (no workers)
    for _ in ds.map(_draw).shuffled(4, seed=SEED):
        with pytest.raises(RuntimeError):  # between samples, outside any transform
            atd.sample_rng()
    with pytest.raises(RuntimeError):
        atd.sample_rng()
    with pytest.raises(RuntimeError):
        atd.sample_seed()


def test_sample_rng_in_filter_is_reproducible(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5))

    def kept(world: int, workers: int) -> list[str]:
        flt = ds.filter(_keep_half)
        per_rank = []
        for r in range(world):
            pipe = flt.shuffled(3, seed=SEED, rank=r, world_size=world, last_batch="exact")
            per_rank.append(sorted(k for b in DataLoader(pipe, batch_size=None, num_workers=workers) for k in b.keys))
        return sorted(k for p in per_rank for k in p)

    base = kept(1, 0)
    assert 0 < len(base) < 25
    assert kept(2, 2) == base


def _keep_half(s: LoaderRec) -> bool:
    return bool(atd.sample_rng().random() < 0.5)


# ------------------------------------------------------------------------------------------------
# transforms run in the workers


def test_lenses_and_map_run_in_the_workers(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5))
    viewed = ds.as_type(LoaderLabelView).map(_add_map_pid)
    main = os.getpid()
    loader = viewed.loader(batch_size=2, num_workers=2, seed=SEED, last_batch="exact")
    labels, lens_pids, map_pids = [], set(), set()
    for b in loader:
        assert isinstance(b, atd.TensorBatch)
        labels.extend(b.label)
        lens_pids.update(b.lens_pid)
        map_pids.update(b.map_pid)
    assert sorted(labels) == list(range(25))
    assert main not in lens_pids and main not in map_pids
    assert len(map_pids) == 2  # both workers did some of the work
    assert lens_pids == map_pids

    # without workers, they run in this process
    local = viewed.loader(batch_size=5, num_workers=0, seed=SEED)
    pids = {p for b in local for p in [*b.lens_pid, *b.map_pid]}
    assert pids == {main}


def test_loader_yields_tensor_batches(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5))
    loader = ds.loader(batch_size=4, num_workers=2, shuffle=False, last_batch="exact")
    batches = list(loader)
    assert len(batches) == len(loader) == 7
    b = batches[0]
    assert isinstance(b, atd.TensorBatch)
    assert isinstance(b.x, torch.Tensor) and b.x.dtype == torch.float32 and tuple(b.x.shape) == (4, 2)
    assert b.label == [0, 1, 2, 3]
    assert b.keys == [_key(i) for i in range(4)]
    assert torch.equal(b.x[:, 0], torch.arange(4, dtype=torch.float32))
    assert len(batches[-1]) == 1
    assert "Loader(" in repr(loader)


def test_loader_with_collate_fn_none_yields_sample_batches(datasets: Datasets) -> None:
    ds = datasets((7, 13, 5))
    loader = ds.loader(batch_size=4, num_workers=0, shuffle=False, collate_fn=None)
    b = next(iter(loader))
    assert isinstance(b, atd.SampleBatch)


def test_batches_a_worker_cannot_send_are_an_error_not_a_silent_loss(tmp_path: Path) -> None:
    @atd.packable
    class LocalOnly:  # defined in a function: it cannot be pickled by reference, so workers cannot send its batches
        x: atd.NDArray
        y: int

    ds = atd.write_samples(
        [LocalOnly(np.zeros(2, np.float32), i) for i in range(8)], tmp_path / "a.tar", maxcount=4, progress=False
    )
    with pytest.raises(atd.AtdataError, match=r"cannot send its batches.*LocalOnly.*num_workers=0"):
        for _ in ds.loader(batch_size=2, num_workers=2, shuffle=False):
            pass
    assert [int(v) for b in ds.loader(batch_size=2, num_workers=0, shuffle=False) for v in b.y] == list(range(8))


# ------------------------------------------------------------------------------------------------ bad data in workers
def _damaged(tmp_path: Path, bad_payloads: int) -> tuple[str, str]:
    """Four shards of 10 samples; ``bad_payloads`` payloads of shard 1 are not msgpack. -> (url, bad shard path)."""
    atd.write_samples(
        [LoaderRec(np.full(3, i, np.float32), i) for i in range(40)], str(tmp_path / "bad-%06d.tar"), maxcount=10
    )
    bad = str(tmp_path / "bad-000001.tar")
    raw = bytearray(Path(bad).read_bytes())
    at = 0
    for _ in range(bad_payloads):
        at = raw.index(b"\x82\xa1x", at + 1)
        raw[at] = 0xC1  # a msgpack type byte that is never valid
    Path(bad).write_bytes(bytes(raw))
    return str(tmp_path / "bad-{000000..000003}.tar"), bad


def test_workers_raise_the_named_error_in_the_main_process(tmp_path: Path) -> None:
    url, _ = _damaged(tmp_path, 1)
    loader = atd.Dataset[LoaderRec](url).loader(batch_size=4, num_workers=2, on_error="raise")
    with pytest.raises(atd.DecodeError, match=r"bad-000001\.tar"):
        list(loader)


@pytest.mark.parametrize("mode", ["skip", "warn"])
def test_workers_report_skips_to_the_main_process(tmp_path: Path, mode: str) -> None:
    # The workers' skips reach the main process with their batches: one warning with the exact total there (and,
    # under "warn", one per sample), not only lines on the workers' stderr.
    url, _ = _damaged(tmp_path, 3)
    loader = atd.Dataset[LoaderRec](url).loader(batch_size=4, num_workers=2, on_error=mode)  # type: ignore[arg-type]
    with pytest.warns(atd.SkippedSamplesWarning) as caught:
        labels = [int(v) for b in loader for v in b.label]
    assert len(labels) == 37 and len(set(labels)) == 37
    assert loader.last_report.samples == 3
    summaries = [str(w.message) for w in caught if "epoch 0" in str(w.message)]
    assert len(summaries) == 1 and "skipped 3 undecodable" in summaries[0] and "bad-000001.tar" in summaries[0]
    per_sample = [w for w in caught if str(w.message).startswith("atdata_torch skipped:")]
    assert len(per_sample) == (3 if mode == "warn" else 0)


def test_workers_report_an_unreadable_shard_once(tmp_path: Path) -> None:
    url, bad = _damaged(tmp_path, 0)
    raw = Path(bad).read_bytes()
    Path(bad).write_bytes(raw[:1300])  # truncated inside its second sample
    Path(bad + ".idx.json").unlink()
    loader = atd.Dataset[LoaderRec](url).loader(batch_size=4, num_workers=2, on_error="skip")
    with pytest.warns(atd.SkippedSamplesWarning, match=r"bad-000001\.tar"):
        labels = [int(v) for b in loader for v in b.label]
    assert len(labels) == 31  # 30 intact shards' samples + the one intact sample before the damage
    assert loader.last_report.shards == [bad]
