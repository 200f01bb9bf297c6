"""Weighted mixtures (``atd.mix``): proportions, a pure function of (seed, epoch), equal batches per rank, the elastic
mid-epoch resume, repeat / stop per source, the source index per batch; through ``ds.loader()``, ``atd.nodes``, the
Lightning DataModule and a YAML config.

As in ``test_loader``, every rank of a topology is played in this process (``rank=`` / ``world_size=``) and the
workers are real DataLoader worker processes; the stream helpers (``interleave``, ``expected_stream``, ``_take``,
``_batches``, ``_round_trip``) are test_loader's. The reference order of an epoch is rebuilt here from the schedule's
pure functions and each source's own ``iter_epoch_order``, one position at a time (not by the mixture's code).
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from test_loader import _batches, _round_trip, _take, expected_stream, interleave

import atdata_torch as atd
from atdata_torch import config
from atdata_torch._mix_schedule import epoch_plan, source_seed
from atdata_torch._mix_schedule import interleave as mix_interleave
from atdata_torch._order import iter_epoch_order

SEED = 77

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


@atd.packable
class MixRec:
    x: NDArray[np.float32]
    src: int
    label: int


@atd.packable
class OtherRec:
    y: int


def _key(src: int, label: int) -> str:
    return f"{src}-{label:05d}"


def _write(root: Path, src: int, counts: Sequence[int]) -> atd.Dataset[MixRec]:
    d = root / f"src{src}-" / "-".join(map(str, counts))
    d.mkdir(parents=True)
    paths, label = [], 0
    for i, c in enumerate(counts):
        recs = [MixRec(x=np.full(2, label + j, np.float32), src=src, label=label + j) for j in range(c)]
        path = d / f"part-{i:04d}.tar"
        atd.write_samples(recs, path, key=lambda s, _i: _key(s.src, s.label), progress=False)
        paths.append(str(path))
        label += c
    return atd.Dataset[MixRec](paths)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[atd.Dataset[MixRec]]:
    """Three sources: 60 samples in 3 shards, 25 in 2, 9 in 1."""
    root = tmp_path_factory.mktemp("mix")
    return [_write(root, 0, (20, 30, 10)), _write(root, 1, (15, 10)), _write(root, 2, (9,))]


def reference(m: atd.Mixture, *, shuffle: bool, epoch: int, seed: int = SEED) -> list[str]:
    """The epoch's keys, position by position, from the schedule and each source's own order."""
    counts = [[ix.count for ix in p.shard_indexes()] for p in m.parts]
    sizes = [sum(c) for c in counts]
    plan = epoch_plan(sizes, m.weights, m.repeat, m.stop, m.samples)
    src, draw = mix_interleave(plan, seed, epoch, shuffle=shuffle, mix_block=m.mix_block)
    orders: dict[tuple[int, int], list[str]] = {}
    out = []
    for s, k in zip(src.tolist(), draw.tolist(), strict=True):
        q, r = divmod(k, sizes[s])
        e = epoch * plan.passes[s] + q
        if (s, e) not in orders:
            first = np.concatenate([[0], np.cumsum(counts[s])[:-1]]).astype(np.int64)
            keys: list[str] = []
            for sh, ix in iter_epoch_order(counts[s], seed=source_seed(seed, s), epoch=e, shuffle=shuffle):
                keys.extend(_key(s, int(v)) for v in (first[sh] + ix).tolist())
            orders[s, e] = keys
        out.append(orders[s, e][r])
    return out


def _loaders(m: atd.Dataset[Any], world: int, workers: int, batch: int, **kw: Any) -> list[atd.Loader]:
    kw.setdefault("seed", SEED)
    return [m.loader(batch_size=batch, rank=r, world_size=world, num_workers=workers, **kw) for r in range(world)]


def _src_of(key: str) -> int:
    return int(key.split("-")[0])


# ------------------------------------------------------------------------------------------------ the schedule
def test_proportions_are_exact_per_block_over_a_long_run() -> None:
    """200k positions, weights 5:3:2: every block of ``mix_block`` holds each source's share to within 2 samples,
    every prefix of the unshuffled interleave to within 2, and the epoch in total to within 1; and for random weights
    over 2..7 sources, the stated bounds (prefix: ``0.5 + k p / 2``, block: ``1 + k p``) hold."""
    probs = np.array([0.5, 0.3, 0.2])
    plan = epoch_plan([100_000, 60_000, 40_000], probs.tolist(), [False] * 3, "first_exhausted", None)
    n = plan.length
    base = plan
    assert abs(n - 200_000) <= 3
    assert all(abs(d - p * n) <= 1 for d, p in zip(plan.draws, probs, strict=True))
    onehot = np.eye(3, dtype=np.int64)[plan.labels]
    prefix = np.cumsum(onehot, axis=0)
    assert np.abs(prefix - np.arange(1, n + 1)[:, None] * probs).max() < 2
    for block in (256, 1024):
        src, _ = mix_interleave(plan, SEED, 3, shuffle=True, mix_block=block)
        full = n // block * block
        per_block = np.eye(3, dtype=np.int64)[src[:full]].reshape(-1, block, 3).sum(axis=1)
        assert np.abs(per_block - block * probs).max() <= 2
        assert (per_block != per_block[0]).any() or block == 256  # the blocks are not all alike
    rng = np.random.default_rng(SEED)
    for _ in range(60):
        k = int(rng.integers(2, 8))
        w = rng.random(k) ** 2 + 0.001
        p = w / w.sum()
        plan = epoch_plan((p * 5000).astype(int) + 5, p.tolist(), [False] * k, "first_exhausted", None)
        onehot = np.eye(k, dtype=np.int64)[plan.labels]
        dev = np.cumsum(onehot, axis=0) - np.arange(1, plan.length + 1)[:, None] * p
        assert (np.abs(dev) <= 0.5 + k * p / 2).all()
        src, _ = mix_interleave(plan, SEED, 0, shuffle=True, mix_block=64)
        full = plan.length // 64 * 64
        per_block = np.eye(k, dtype=np.int64)[src[:full]].reshape(-1, 64, k).sum(axis=1)
        assert (np.abs(per_block - 64 * p) <= 1 + k * p).all()
    # ...and it is a shuffle: within a block, the order differs from the fixed interleave and between epochs
    a, _ = mix_interleave(base, SEED, 3, shuffle=True, mix_block=1024)
    b, _ = mix_interleave(base, SEED, 4, shuffle=True, mix_block=1024)
    assert (a != base.labels).any() and (a != b).any()


def test_schedule_is_a_pure_function_of_seed_and_epoch() -> None:
    plan = epoch_plan([500, 300], [0.7, 0.3], [False, True], "first_exhausted", None)
    again = epoch_plan([500, 300], [0.7, 0.3], [False, True], "first_exhausted", None)
    runs = {
        (seed, epoch): mix_interleave(p, seed, epoch, shuffle=True, mix_block=64)
        for seed in (0, 1)
        for epoch in (0, 1)
        for p in (plan, again)
    }
    same = mix_interleave(plan, 0, 0, shuffle=True, mix_block=64)
    assert all((x == y).all() for x, y in zip(same, runs[0, 0], strict=True))
    assert len({tuple(v[0].tolist()) for v in runs.values()}) == 4


# ------------------------------------------------------------------------------------------------ the loader
# (ranks, workers, batch per rank)
TOPOLOGIES = [(1, 0, 8), (2, 2, 4), (3, 1, 3), (4, 0, 2)]


@pytest.mark.parametrize("policy", ["drop", "pad", "exact"])
@pytest.mark.parametrize(("world", "workers", "batch"), TOPOLOGIES)
def test_every_rank_the_same_batches_and_one_global_stream(
    sources: list[atd.Dataset[MixRec]], world: int, workers: int, batch: int, policy: str
) -> None:
    m = atd.mix(sources, [3, 2, 1], repeat=[False, False, True], mix_block=16)
    ref = reference(m, shuffle=True, epoch=0)
    assert len(m) == len(ref)
    loaders = _loaders(m, world, workers, batch, last_batch=policy)
    per_rank = [_batches(L) for L in loaders]
    if policy != "exact":
        assert len({len(p) for p in per_rank}) == 1
    assert [len(p) for p in per_rank] == [len(L) for L in loaders]
    assert interleave(per_rank) == expected_stream(ref, policy, batch * world)


def test_same_seed_and_epoch_same_order_in_a_fresh_mixture(sources: list[atd.Dataset[MixRec]]) -> None:
    """Built again from fresh datasets, the order is the same; another epoch or seed gives another one."""
    fresh = [atd.Dataset[MixRec](p.list_shards()) for p in sources]
    a, b = atd.mix(sources, [1, 1, 1], stop="all_exhausted"), atd.mix(fresh, [1, 1, 1], stop="all_exhausted")
    streams = {}
    for name, m in (("a", a), ("b", b)):
        for seed in (SEED, SEED + 1):
            loader = m.loader(batch_size=5, seed=seed)
            for epoch in (0, 1):
                loader.set_epoch(epoch)
                streams[name, seed, epoch] = interleave([_batches(loader)])
    for key in [(SEED, 0), (SEED, 1), (SEED + 1, 0)]:
        assert streams[("a", *key)] == streams[("b", *key)] == reference(a, shuffle=True, epoch=key[1], seed=key[0])
    assert len({tuple(v) for v in streams.values()}) == 4
    ordered = interleave([_batches(a.loader(batch_size=5, shuffle=False))])
    assert ordered == reference(a, shuffle=False, epoch=0)
    assert [k for k in ordered if _src_of(k) == 0][:3] == ["0-00000", "0-00001", "0-00002"]


@pytest.mark.parametrize(
    ("a", "b", "stop_at"),
    [
        ((1, 2, 6), (2, 1, 3), 3),  # same global batch: the rest is the same stream
        ((2, 2, 4), (3, 0, 3), 2),  # another global batch, ranks and workers
        ((1, 0, 5), (2, 3, 2), 0),  # stopped before the first batch
        ((1, 0, 5), (2, 2, 3), -1),  # stopped at the end: the next epoch
    ],
)
def test_elastic_mid_epoch_resume(
    sources: list[atd.Dataset[MixRec]], a: tuple[int, int, int], b: tuple[int, int, int], stop_at: int
) -> None:
    m = atd.mix(sources, [2, 1, 1], repeat=[False, True, True], mix_block=32)
    epoch = 2
    refs = {e: reference(m, shuffle=True, epoch=e) for e in (epoch, epoch + 1)}
    (wa, ka, ba), (wb, kb, bb) = a, b
    ga, gb = wa * ba, wb * bb
    loaders_a = _loaders(m, wa, ka, ba, last_batch="exact")
    steps = len(loaders_a[0])
    k = steps if stop_at < 0 else stop_at
    prefix, states = [], []
    for L in loaders_a:
        L.set_epoch(epoch)
        got, state = _take(L, k)
        prefix.append(got)
        states.append(state)
    assert all(s == states[0] for s in states)
    assert interleave(prefix) == refs[epoch][: k * ga]
    state = _round_trip(states[0])
    assert (state["epoch"], state["position"]) == ((epoch + 1, 0) if k == steps else (epoch, k * ga))
    loaders_b = _loaders(m, wb, kb, bb, last_batch="exact")
    for L in loaders_b:
        L.load_state_dict(state)
    rest = interleave([_batches(L) for L in loaders_b])
    expected = refs[epoch + 1] if k == steps else refs[epoch][k * ga :]
    assert Counter(rest) == Counter(expected)
    if ga == gb or k == steps:
        assert rest == expected
    assert interleave([_batches(L) for L in loaders_b]) == (
        refs[epoch + 1] if k < steps else reference(m, shuffle=True, epoch=epoch + 2)
    )


def test_a_state_of_another_mixture_is_refused(sources: list[atd.Dataset[MixRec]]) -> None:
    m = atd.mix(sources, [2, 1, 1])
    _, state = _take(m.loader(batch_size=4, seed=SEED), 2)
    for other in (atd.mix(sources, [1, 1, 2]), atd.mix(sources, [2, 1, 1], stop="all_exhausted"), sources[0]):
        with pytest.raises(atd.LoaderStateError, match="another dataset"):
            other.loader(batch_size=4, seed=SEED).load_state_dict(state)
    m.loader(batch_size=2, seed=SEED, num_workers=2).load_state_dict(state)  # another topology is fine


# ------------------------------------------------------------------------------------------------ stop / repeat
def _epoch_keys(m: atd.Mixture, epoch: int = 0) -> list[str]:
    loader = m.loader(batch_size=7, seed=SEED)
    loader.set_epoch(epoch)
    return interleave([_batches(loader)])


def test_first_exhausted_reads_each_sample_at_most_once(sources: list[atd.Dataset[MixRec]]) -> None:
    m = atd.mix(sources, [1, 1, 1])  # the 9-sample source runs out first
    keys = _epoch_keys(m)
    assert len(keys) == len(set(keys)) == len(m)
    per = Counter(_src_of(k) for k in keys)
    assert per[2] == 9 and abs(per[0] - 9) <= 1 and abs(per[1] - 9) <= 1
    assert {k for k in keys if _src_of(k) == 2} == {_key(2, i) for i in range(9)}


def test_all_exhausted_reads_every_sample_and_repeats_the_short_sources(sources: list[atd.Dataset[MixRec]]) -> None:
    m = atd.mix(sources, [1, 1, 1], stop="all_exhausted")
    keys = _epoch_keys(m)
    per = Counter(_src_of(k) for k in keys)
    assert per[0] == 60 and abs(per[1] - 60) <= 1 and abs(per[2] - 60) <= 1
    for s, n in ((0, 60), (1, 25), (2, 9)):
        mine = [k for k in keys if _src_of(k) == s]
        assert set(mine) == {_key(s, i) for i in range(n)}
        for lo in range(0, len(mine) - n + 1, n):  # each full pass: every sample once, in a new order
            assert sorted(mine[lo : lo + n]) == sorted(_key(s, i) for i in range(n))
        if len(mine) >= 2 * n:
            assert mine[:n] != mine[n : 2 * n]


def test_per_source_repeat_and_an_epoch_size(sources: list[atd.Dataset[MixRec]]) -> None:
    m = atd.mix(sources, [1, 1, 2], repeat=[False, True, True])  # source 0 ends the epoch, the others cycle
    keys = _epoch_keys(m)
    per = Counter(_src_of(k) for k in keys)
    assert per[0] == 60 and abs(per[2] - 120) <= 2 and abs(per[1] - 60) <= 2
    assert sorted(k for k in keys if _src_of(k) == 0) == [_key(0, i) for i in range(60)]
    sized = atd.mix(sources, [1, 1, 2], repeat=True, samples=50)
    assert len(sized) == 50 == len(_epoch_keys(sized))
    assert len(atd.mix(sources, [1, 1, 1], samples=10)) == 10  # the cap comes before source 2 runs out
    assert len(atd.mix(sources, [1, 1, 1], samples=1000)) == len(atd.mix(sources, [1, 1, 1]))  # and after


def test_bad_mixtures_raise_mixture_errors(sources: list[atd.Dataset[MixRec]], tmp_path: Path) -> None:
    other = atd.write_samples([OtherRec(y=1)], tmp_path / "o.tar", progress=False)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"datasets": []}, "at least one"),
        ({"weights": [1, 2]}, "2 weights for 3 datasets"),
        ({"weights": [1, 0, 1]}, "finite and > 0"),
        ({"weights": [1, float("nan"), 1]}, "finite and > 0"),
        ({"repeat": True}, "nothing ends the epoch"),
        ({"repeat": [True, False]}, "2 repeat flags"),
        ({"stop": "longest"}, "stop must be"),
        ({"stop": "all_exhausted", "repeat": [True, False, True]}, "only apply"),
        ({"samples": 0}, "positive int"),
        ({"mix_block": 0}, "mix_block"),
        ({"source_field": "label"}, "is a field of MixRec"),
        ({"datasets": [sources[0], other]}, "does not share batches"),
        ({"datasets": [sources[0], sources[0]]}, "feed only one source"),
        ({"datasets": [sources[0].map(lambda s: s), sources[1]]}, "does not share batches"),
    ]
    for kw, message in cases:
        args = {"datasets": sources, **kw}
        with pytest.raises(atd.MixtureError, match=message):
            atd.mix(args.pop("datasets"), **args)
    with pytest.raises(atd.MixtureError, match="itself a mixture"):
        atd.mix([atd.mix(sources[:2]), sources[2]])
    with pytest.raises(atd.MixtureError, match="mix the sources instead"):
        atd.Dataset.concat([atd.mix(sources[:2]), sources[2]])
    with pytest.raises(atd.MixtureError, match="select ranges of the sources"):
        atd.mix(sources).select_range(0, 10)


# ------------------------------------------------------------------------------------------------ source index
def _keep_even(s: MixRec) -> bool:
    return s.label % 2 == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_each_batch_carries_its_source_index(sources: list[atd.Dataset[MixRec]], workers: int) -> None:
    m = atd.mix(sources, [3, 2, 1], repeat=[False, True, True], source_field="source")
    total: Counter[int] = Counter()
    for b in m.loader(batch_size=8, seed=SEED, num_workers=workers):
        assert isinstance(b.source, torch.Tensor) and b.source.dtype == torch.int64
        assert b.source.tolist() == [_src_of(k) for k in b.keys] == b.src
        total.update(b.source.tolist())
    assert dict(total) == dict(enumerate(epoch_plan([60, 25, 9], m.weights, m.repeat, m.stop, None).draws))
    # with a filter (rows dropped inside a batch) the labels follow the rows that stay; keys stay plain strings
    kept = m.filter(_keep_even)
    for b in kept.loader(batch_size=8, seed=SEED, num_workers=workers):
        assert b.source.tolist() == [_src_of(k) for k in b.keys] == b.src
        assert all(type(k) is str for k in b.keys) and all(v % 2 == 0 for v in b.label)
    # and in SampleBatches of a pipeline
    batch = next(iter(m.shuffled(batch_size=6, seed=SEED)))
    assert batch.source.tolist() == [_src_of(k) for k in batch.keys]


def test_source_index_under_skipped_samples(tmp_path: Path, sources: list[atd.Dataset[MixRec]]) -> None:
    path = tmp_path / "bad.tar"
    recs = [MixRec(x=np.zeros(2, np.float32), src=3, label=i) for i in range(6)]
    atd.write_samples(recs, path, key=lambda s, _i: _key(3, s.label), progress=False)
    data = bytearray(path.read_bytes())
    at = data.find(b"\x83")  # the first sample's msgpack map header: make it a string header (undecodable)
    data[at] = 0xC1  # "never used" in msgpack
    path.write_bytes(bytes(data))
    bad = atd.Dataset[MixRec](str(path))
    m = atd.mix([sources[2], bad], source_field="source")
    with pytest.warns(atd.SkippedSamplesWarning):
        batches = list(m.loader(batch_size=4, seed=SEED, on_error="skip"))
    keys = [k for b in batches for k in b.keys]
    assert len(keys) == len(m) - 1 and _key(3, 0) not in keys
    for b in batches:
        assert b.source.tolist() == [{2: 0, 3: 1}[_src_of(k)] for k in b.keys]


# ------------------------------------------------------------------------------------------------ front-ends
def test_nodes_source_reads_and_resumes_a_mixture(sources: list[atd.Dataset[MixRec]]) -> None:
    from torchdata.nodes import Loader

    m = atd.mix(sources, [2, 1, 1], repeat=[False, True, True], source_field="source")
    ref = reference(m, shuffle=True, epoch=0)
    loader = Loader(atd.nodes.source(m, batch_size=5, shuffle=True, seed=SEED))
    full = [list(b.keys) for b in loader]
    assert interleave([full]) == ref
    node_loader = Loader(atd.nodes.source(m, batch_size=5, shuffle=True, seed=SEED))
    it = iter(node_loader)
    first = [list(next(it).keys) for _ in range(3)]
    state = node_loader.state_dict()
    again = Loader(atd.nodes.source(m, batch_size=5, shuffle=True, seed=SEED))
    again.load_state_dict(state)
    rest = [list(b.keys) for b in again]
    assert first + rest == full
    two = [atd.nodes.source(m, batch_size=5, shuffle=True, seed=SEED, rank=r, world_size=2) for r in range(2)]
    per_rank = [[list(b.keys) for b in Loader(n)] for n in two]
    assert interleave(per_rank) == expected_stream(ref, "pad", 10)
    unbatched = [s.label for s in Loader(atd.nodes.source(m, shuffle=True, seed=SEED))]
    assert len(unbatched) == len(ref)


def test_yaml_config_builds_a_mixture(
    sources: list[atd.Dataset[MixRec]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = [str(Path(p.list_shards()[0]).parent) for p in sources]
    for i, d in enumerate(dirs):
        monkeypatch.setenv(f"MIX_SRC{i}", d)
    doc = f"""
        train:
          mix:
            - {{data: "${{MIX_SRC0}}/part-*.tar", weight: 2}}
            - {{data: ["${{MIX_SRC1}}/part-0000.tar", "${{MIX_SRC1}}/part-0001.tar"], repeat: true}}
            - {{data: "${{MIX_SRC2}}/part-*.tar", repeat: true}}
          source_field: source
          mix_block: 32
        sample_type: {__name__}:MixRec
        batch_size: 5
        seed: {SEED}
        last_batch: exact
    """
    path = tmp_path / "mix.yaml"
    path.write_text(textwrap.dedent(doc))
    cfg = config.load(path)
    m = cfg.dataset("train")
    assert isinstance(m, atd.Mixture) and m.weights == (0.5, 0.25, 0.25) and m.repeat == (False, True, True)
    stream = [list(b.keys) for b in cfg.loader("train", rank=0, world_size=1)]
    assert interleave([stream]) == reference(m, shuffle=True, epoch=0)
    assert config.DataConfig.from_dict(cfg.to_dict()) == cfg
    bad = [
        ({"mix": [{"data": "a.tar", "wieght": 2}]}, "did you mean 'weight'"),
        ({"mix": []}, "non-empty list of sources"),
        ({"mix": [{"weight": 2}]}, "needs 'data'"),
        ({"mix": [{"data": "a.tar", "weight": -1}]}, r"train.mix\[0\].weight: expected a number > 0"),
        ({"mix": [{"data": "a.tar"}], "stop": "never"}, "train.stop"),
        ({"mix": [{"data": "a.tar"}], "mixblock": 3}, "did you mean 'mix_block'"),
    ]
    for spec, message in bad:
        with pytest.raises(atd.ConfigError, match=message):
            config.DataConfig(train=spec)
    with pytest.raises(atd.ConfigError, match="train: mix"):
        spec = {"mix": [{"data": f"{dirs[0]}/*.tar"}], "source_field": "label"}
        config.DataConfig(train=spec, sample_type=MixRec).dataset("train")


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
@pytest.mark.filterwarnings("ignore:The '.*' does not have many workers")
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")
def test_lightning_datamodule_trains_on_a_mixture_and_resumes_it(
    sources: list[atd.Dataset[MixRec]], tmp_path: Path
) -> None:
    """A real ``lightning.Trainer``: 12 steps straight, and 5 steps + a checkpoint + a new Trainer, DataModule and
    model resuming to 12, read the same stream (the reference's), with each batch's sources."""
    pytest.importorskip("lightning")
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from atdata_torch.integrations.lightning import AtdataDataModule

    seen: list[tuple[list[str], list[int]]] = []

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append((list(batch.keys), batch.source.tolist()))
            return self.lin(batch.x).pow(2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    m = atd.mix(sources, [3, 2, 1], repeat=[False, True, True], source_field="source")

    def fit(out: Path, max_steps: int, ckpt: Path | None = None) -> list[tuple[list[str], list[int]]]:
        seen.clear()
        dm = AtdataDataModule(train=m, batch_size=6, seed=SEED, last_batch="drop")
        every = ModelCheckpoint(dirpath=out, every_n_train_steps=5, save_top_k=-1, filename="{step}")
        trainer = L.Trainer(
            max_steps=max_steps,
            accelerator="cpu",
            devices=1,
            logger=False,
            callbacks=[every],
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=out,
        )
        trainer.fit(Model(), datamodule=dm, ckpt_path=ckpt)
        return list(seen)

    full = fit(tmp_path / "full", 12)
    keys = [k for b, _ in full for k in b]
    assert len(full) == 12 and keys == reference(m, shuffle=True, epoch=0)[: 12 * 6]
    assert all(src == [_src_of(k) for k in b] for b, src in full)
    head = fit(tmp_path / "cut", 5)
    tail = fit(tmp_path / "cut", 12, ckpt=tmp_path / "cut" / "step=5.ckpt")
    assert head + tail == full


def test_a_mixture_pickles_without_its_schedule(sources: list[atd.Dataset[MixRec]]) -> None:
    """Spawned workers get the mixture by pickle: the schedule (one entry per position) is rebuilt there."""
    import pickle

    m = atd.mix(sources, [2, 1, 1], source_field="source")
    assert len(m) > 0 and m._plans
    copy = pickle.loads(pickle.dumps(m))
    assert copy._plans == {} and len(copy) == len(m) and copy.weights == m.weights
    ref = interleave([_batches(m.loader(batch_size=4, seed=SEED))])
    ctx = "forkserver" if "forkserver" in __import__("multiprocessing").get_all_start_methods() else "spawn"
    spawned = m.loader(batch_size=4, seed=SEED, num_workers=2, multiprocessing_context=ctx)
    assert interleave([_batches(spawned)]) == ref


@pytest.mark.parametrize("shuffle", [False, True])
def test_remote_sources_that_repeat_read_their_shards_again(
    sources: list[atd.Dataset[MixRec]], tmp_path: Path, shuffle: bool
) -> None:
    """Over HTTP a shard streams into 4 MiB segments, and an in-order pass lets go of the segments behind it; a
    mixture's repeating source reads its shard again (a 7 MB shard, 5 passes), so its passes keep them."""
    from http_server import FaultServer

    big = [MixRec(x=np.full(150_000, i, np.float32), src=1, label=i) for i in range(12)]  # source 1 of this mix
    atd.write_samples(big, tmp_path / "big" / "part-0000.tar", key=lambda s, _i: _key(1, s.label), progress=False)
    local = atd.mix([sources[0], atd.Dataset[MixRec](str(tmp_path / "big" / "part-0000.tar"))], repeat=[False, True])
    root = Path(sources[0].list_shards()[0]).parents[2]
    (root / "big").mkdir(exist_ok=True)
    for f in (tmp_path / "big").iterdir():
        (root / "big" / f.name).write_bytes(f.read_bytes())
    with FaultServer(root) as srv:
        remote = [
            atd.Dataset[MixRec]([srv.url(str(Path(s).relative_to(root))) for s in p.list_shards()], timeout=5)
            for p in (sources[0], atd.Dataset[MixRec](str(root / "big" / "part-0000.tar")))
        ]
        m = atd.mix(remote, repeat=[False, True], source_field="source")
        got = []
        for b in m.loader(batch_size=5, seed=SEED, shuffle=shuffle):
            got.append(list(b.keys))
            for k, x in zip(b.keys, b.x, strict=True):
                assert float(x[-1]) == float(k.split("-")[1]) or _src_of(k) == 0
    assert interleave([got]) == reference(local, shuffle=shuffle, epoch=0)
    assert Counter(_src_of(k) for b in got for k in b)[1] == 60
