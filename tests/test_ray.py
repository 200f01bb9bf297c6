"""atdata_torch.integrations.ray on a real local Ray (started once for this module: it takes 10-50 s here).

Round trips of typed samples with fixed, ragged and optional NDArray fields; row counts and size estimates from
the index sidecars; ranges within a shard; staged writes that leave nothing behind when they fail and no
duplicates when a task is retried; S3 through the moto server; an index entry written by ``write_atdata``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from remote_data import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, moto_s3_client

import atdata_torch as atd

pytest.importorskip("ray.data")

import ray

from atdata_torch.integrations._ray_read import plan_parts
from atdata_torch.integrations.ray import (
    AtdataDatasource,
    TorchCollate,
    read_atdata,
    write_atdata,
)

pytestmark = [
    pytest.mark.integration,
    # Ray 2.60's DataContext warns about its own deprecated fields (use_push_based_shuffle, use_polars...) when it
    # is first created; only those, issued from ray.data.context, are ignored.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]

ROOT = Path(__file__).resolve().parent.parent


@atd.packable
class Item:
    x: NDArray[np.float32]
    r: NDArray[np.int16]
    o: NDArray[np.float64] | None
    caption: str
    n: int


@atd.packable
class Flaky:
    """Fails in ``__post_init__`` where ``fail`` names a marker file: always (``always``), or only while the marker
    is absent (it is created first), i.e. the first attempt of the task writing that row."""

    n: int
    fail: str
    always: bool

    def __post_init__(self) -> None:
        if self.fail and (self.always or not os.path.exists(self.fail)):
            Path(self.fail).touch()
            raise RuntimeError(f"injected write failure at row {self.n}")


def _items(n: int = 30) -> list[Item]:
    return [
        Item(
            x=np.full((2, 3), i, np.float32),
            r=np.arange(i % 4 + 1, dtype=np.int16),
            o=None if i % 2 else np.ones(2) * i,
            caption=f"caption {i}",
            n=i,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def shards(tmp_path: Path) -> atd.Dataset[Item]:
    return atd.write_samples(_items(), str(tmp_path / "in" / "train.tar"), maxcount=8, progress=False)


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_round_trip_fixed_ragged_optional(ray_cluster: None, shards: atd.Dataset[Item], tmp_path: Path) -> None:
    rds = read_atdata(shards.list_shards(), Item, rows_per_block=5)
    schema = rds.schema()
    assert schema is not None
    types = dict(zip(schema.names, [str(t) for t in schema.types], strict=True))
    assert "ArrowTensorType" in types["x"] and "VariableShaped" in types["r"] and "VariableShaped" in types["o"]
    assert (types["caption"], types["n"]) == ("string", "int64")
    out = tmp_path / "out"
    written = write_atdata(rds, str(out / "copy.tar"), Item, maxcount=6)
    names = _files(out)
    assert all(re.fullmatch(r"copy-\d{6}\.tar(\.idx\.json)?", n) for n in names), names
    assert written.list_shards() == [str(out / f"copy-{i:06d}.tar") for i in range(len(names) // 2)]
    back = sorted(atd.Dataset[Item](str(out / "copy-*.tar")), key=lambda s: s.n)
    assert back == _items()
    assert all(idx.count <= 6 and idx.payload_ext == "msgpack" for idx in written.shard_indexes())


def test_counts_and_sizes_come_from_the_sidecars(ray_cluster: None, shards: atd.Dataset[Item]) -> None:
    source = AtdataDatasource(shards)
    payloads = sum(sum(idx.payload_sizes or []) for idx in shards.shard_indexes())
    assert source.estimate_inmemory_data_size() == payloads
    assert [n for _, n, _ in source.shard_counts()] == [8, 8, 8, 6]
    assert read_atdata(shards, rows_per_block=3).count() == 30


@pytest.mark.parametrize("pack", [None, 4], ids=["default-layout", "packed"])
def test_ranges_within_a_shard_equal_whole_shard_reads(ray_cluster: None, tmp_path: Path, pack: int | None) -> None:
    one = atd.write_samples(_items(), str(tmp_path / "one.tar"), progress=False, pack=pack)
    whole = read_atdata(one, override_num_blocks=1).take_all()
    split = read_atdata(one, override_num_blocks=4).materialize()
    tasks = AtdataDatasource(one).get_read_tasks(4)
    assert [t.metadata.num_rows for t in tasks] == [7, 8, 7, 8]
    rows = split.take_all()
    key = lambda r: r["n"]  # noqa: E731
    assert len(rows) == 30 and split.num_blocks() >= 4
    for a, b in zip(sorted(whole, key=key), sorted(rows, key=key), strict=True):
        assert a["n"] == b["n"] and a["caption"] == b["caption"]
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["r"], b["r"])


def test_a_selected_range_reads_only_its_samples(
    ray_cluster: None, shards: atd.Dataset[Item], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # samples [5, 21) of shards of 8: the end of shard 0, all of shard 1, the start of shard 2 (what a
    # "train[:10%]"-style split selects), from relative paths (Ray workers run in another directory)
    monkeypatch.chdir(tmp_path)
    part = atd.Dataset[Item]("in/train-{000000..000003}.tar").select_range(5, 21)
    want = [s.n for s in part]
    assert want == list(range(5, 21))
    for blocks in (1, 6):  # whole (selected) shards, and ranges within them
        rds = read_atdata(part, override_num_blocks=blocks)
        assert rds.count() == 16
        assert sorted(r["n"] for r in rds.take_all()) == want


def test_plan_parts_covers_every_sample_once() -> None:
    parts = plan_parts([("a", 10, 100), ("b", 0, 0), ("c", 3, 30)], 6)
    # 6 tasks for 13 samples: shard a gets round(6 * 10 / 13) = 5 ranges, shard c one; the empty shard none.
    assert [(p.name, p.lo, p.hi) for p in parts] == [("a", 0, 2), ("a", 2, 4), ("a", 4, 6), ("a", 6, 8),
                                                     ("a", 8, 10), ("c", 0, 3)]  # fmt: skip
    assert sum(p.nbytes for p in parts) == 130  # each range's share of its shard's payload bytes
    assert [(p.name, p.lo, p.hi) for p in plan_parts([("a", 10, 100), ("c", 3, 30)], 2)] == [("a", 0, 10), ("c", 0, 3)]


def _first(batches: Any) -> Any:
    """The first batch; the iterator is closed, so that its execution stops and frees its CPUs."""
    it = iter(batches)
    try:
        return next(it)
    finally:
        it.close()


def test_iter_torch_batches_with_a_str_column(ray_cluster: None, shards: atd.Dataset[Item]) -> None:
    rds = read_atdata(shards, rows_per_block=8)
    with pytest.raises(TypeError, match=r"numpy\.str_"):  # Ray's default collate: every column becomes a tensor
        _first(rds.select_columns(["x", "caption"]).iter_torch_batches(batch_size=8))
    batch = _first(rds.iter_torch_batches(batch_size=8, collate_fn=TorchCollate()))
    assert tuple(batch["x"].shape) == (8, 2, 3) and batch["caption"][:2] == ["caption 0", "caption 1"]
    assert batch["o"][1] is None and tuple(batch["o"][0].shape) == (2,)
    assert [tuple(t.shape) for t in batch["r"][:3]] == [(1,), (2,), (3,)]
    plain = _first(rds.drop_columns(["caption", "r", "o"]).iter_torch_batches(batch_size=8))
    assert sorted(plain) == ["n", "x"]


def _flaky_rows(marker: str, always: bool) -> Any:
    """24 rows in 2 blocks (one write task each); row 18 fails after its task has staged its first shard of 4."""
    rows = [{"n": i, "fail": marker if i == 18 else "", "always": always} for i in range(24)]
    return ray.data.from_items(rows, override_num_blocks=2)


def test_a_failed_write_leaves_nothing(ray_cluster: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Exception, match="injected write failure"):
        write_atdata(_flaky_rows(str(tmp_path / "marker"), True), str(out / "f.tar"), Flaky, maxcount=4)
    assert (tmp_path / "marker").exists()  # the row was reached: earlier shards of its task were staged
    assert _files(out) == []


def test_a_retried_task_gives_no_duplicates(ray_cluster: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    marker = tmp_path / "marker"
    retry = {"max_retries": 2, "retry_exceptions": True}
    ds = write_atdata(_flaky_rows(str(marker), False), str(out / "f.tar"), Flaky, maxcount=4, ray_remote_args=retry)
    assert marker.exists()
    assert sorted(s.n for s in ds) == list(range(24))
    assert len({k for idx in ds.shard_indexes() for k in idx.keys}) == 24
    assert all(re.fullmatch(r"f-\d{6}\.tar(\.idx\.json)?", n) for n in _files(out))


def test_write_refuses_to_mix_with_existing_shards(ray_cluster: None, shards: atd.Dataset[Item]) -> None:
    target = Path(shards.list_shards()[0]).parent / "train.tar"
    with pytest.raises(atd.AtdataError, match="already exist"):
        write_atdata(ray.data.from_items([{"n": 1}]), str(target), maxcount=4)


def test_s3_write_and_read(
    ray_cluster: None, moto_endpoint: str, aws_env: dict[str, str], shards: atd.Dataset[Item]
) -> None:
    client = moto_s3_client(moto_endpoint)
    client.create_bucket(Bucket="ray-out")
    opts = {"endpoint": moto_endpoint, "access_key": MOTO_ACCESS_KEY, "secret_key": MOTO_SECRET_KEY}
    written = write_atdata(
        read_atdata(shards), "s3://ray-out/sets/train.tar", Item, maxcount=10, region="us-east-1", **opts
    )
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="ray-out")["Contents"])
    assert keys == [f"sets/train-{i:06d}.tar{s}" for i in range(len(keys) // 2) for s in ("", ".idx.json")]
    back = read_atdata(written.list_shards(), Item, **opts)
    assert back.count() == 30
    assert sorted(r["n"] for r in back.take_all()) == list(range(30))
    # Counting needs the sidecars only: without the shards themselves, count() still answers.
    for k in keys:
        if k.endswith(".tar"):
            client.delete_object(Bucket="ray-out", Key=k)
    assert read_atdata(written.list_shards(), Item, **opts).count() == 30
    client.close()


def test_index_entry_loads_with_load_dataset(ray_cluster: None, shards: atd.Dataset[Item], tmp_path: Path) -> None:
    index = atd.Index(str(tmp_path / "index.db"))
    write_atdata(
        read_atdata(shards), str(tmp_path / "idx" / "data.tar"), Item, maxcount=12, index=index, name="rayset",
        version="1.0.0",
    )  # fmt: skip
    ds = atd.load_dataset("@local/rayset@1.0.0", Item, split="train", index=index)
    assert sorted(s.n for s in ds) == list(range(30))
    assert read_atdata("@local/rayset@1.0.0", Item, index=index).count() == 30
    index.close()


def test_readme_example_runs(ray_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Ray block (skipped by test_examples, which starts no Ray) runs here, on the running Ray."""
    text = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if b.startswith("# ray:")]
    monkeypatch.chdir(tmp_path)
    module: dict[str, Any] = {"__name__": "__main__"}  # as in a script: Ray pickles its classes by value
    exec(compile(block, "README.md", "exec", dont_inherit=True), module)  # as a script: no __future__ import
