"""load_dataset(): split detection (including the layouts the original atdata fails on), split expressions with
exact sample sets, data_files, DatasetDict, errors, resolvers, and remote paths (S3 on moto, HTTP)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from http_server import FaultServer
from remote_data import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, Rec, records, rows, write_shards

import atdata_torch as atd
from atdata_torch import load as load_mod
from atdata_torch.load import detect_split, parse_split


def labels(ds: Any) -> list[int]:
    return [r[0] for r in rows(ds.ordered())]


def write_one(path: Path, n: int, start: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atd.write_samples(records(n, start=start, width=16), path, progress=False)
    return path


# ---------------------------------------------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("path", "split"),
    [
        ("mnist_train.tar", "train"),
        ("mnist_test.tar", "test"),
        ("data/train-000000.tar", "train"),
        ("data/ds.training.000001.tar", "train"),
        ("cifar-testing-000003.tar", "test"),
        ("x_val_0.tar", "validation"),
        ("x-valid-000000.tar", "validation"),
        ("my.validation.tar", "validation"),
        ("squad_dev.tar", "validation"),
        ("root/train/shard-000000.tar", "train"),
        ("root/dev/shard-000000.tar", "validation"),
        ("root/TEST/shard-000000.tar", "test"),
        ("root\\valid\\shard-000000.tar", "validation"),
        ("root/train/test-000000.tar", "test"),  # the file name wins over the directory
        ("trainer-000000.tar", None),  # a split name must stand between delimiters
        ("contest-000000.tar", None),
        ("latest.tar", None),
        ("devices/shard.tar", None),
        ("shard-000000.tar", None),
        # Directories count only when their whole name is a split name (nearest first).
        ("/home/me/test_runs/shard.tar", None),
        ("/data/mnist_test/shard.tar", None),
        ("root/validation/sub/x.tar", "validation"),
        ("/srv/test/train/x.tar", "train"),
    ],
)
def test_detect_split(path: str, split: str | None) -> None:
    assert detect_split(path) == split


# ---------------------------------------------------------------------------------------------------- layouts
@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """``mnist_train.tar`` (8 samples, labels 0..7) and ``mnist_test.tar`` (4 samples, labels 50..53)."""
    root = tmp_path / "flat"
    write_one(root / "mnist_train.tar", 8, 0)
    write_one(root / "mnist_test.tar", 4, 50)
    return root


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """``root/train/*.tar`` (20 samples in shards of 6: labels 0..19), ``root/test/*.tar`` (labels 200..205) and
    ``root/valid/*.tar`` (labels 100..104)."""
    root = tmp_path / "nested"
    write_shards(root / "train", "part", n=20, per_shard=6, width=16)
    write_shards(root / "test", "part", n=6, per_shard=6, start=200, width=16)
    write_shards(root / "valid", "part", n=5, per_shard=5, start=100, width=16)
    return root


def test_underscore_split_names_in_a_directory(flat: Path) -> None:
    dd = atd.load_dataset(flat)
    assert isinstance(dd, atd.DatasetDict)
    assert sorted(dd) == ["test", "train"]
    assert labels(dd["train"]) == list(range(8))
    assert labels(dd["test"]) == list(range(50, 54))
    assert dd.num_samples == {"train": 8, "test": 4}
    assert dd.num_shards == {"train": 1, "test": 1}


def test_single_file_names_its_split(flat: Path) -> None:
    dd = atd.load_dataset(str(flat / "mnist_test.tar"))
    assert list(dd) == ["test"]
    ds = atd.load_dataset(str(flat / "mnist_train.tar"), split="train")
    assert isinstance(ds, atd.Dataset) and labels(ds) == list(range(8))
    with pytest.raises(atd.SplitError, match=r"'train' does not exist; available splits: \['test'\]"):
        atd.load_dataset(str(flat / "mnist_test.tar"), split="train")


def test_unnamed_file_is_train(tmp_path: Path) -> None:
    """BUG (fixed): any directory above the file counted, so a shard under pytest's ``.../test_xxx0/`` (or a
    user's ``~/test_runs/``) was a "test" split."""
    write_one(tmp_path / "shard.tar", 3, 0)
    assert "test_" in str(tmp_path)
    assert list(atd.load_dataset(str(tmp_path / "shard.tar"))) == ["train"]


def test_directories_above_a_dataset_root_do_not_count(tmp_path: Path) -> None:
    """BUG (fixed): a dataset directory inside a directory named ``test`` was all "test"."""
    root = tmp_path / "test" / "digits"
    write_shards(root, "part", n=4, per_shard=2, width=8)
    write_shards(root / "valid", "part", n=2, per_shard=2, start=10, width=8)
    dd = atd.load_dataset(root)
    assert dd.num_shards == {"train": 2, "validation": 1}


def test_split_directories(nested: Path) -> None:
    dd = atd.load_dataset(nested, Rec)
    assert sorted(dd) == ["test", "train", "validation"]
    assert dd.num_shards == {"test": 1, "train": 4, "validation": 1}
    assert labels(dd["train"]) == list(range(20))
    assert labels(dd["test"]) == list(range(200, 206))
    assert labels(dd["validation"]) == list(range(100, 105))
    assert dd.sample_type is Rec


def test_pattern_spanning_splits(tmp_path: Path) -> None:
    write_shards(tmp_path, "train", n=4, per_shard=2, width=8)
    write_shards(tmp_path, "test", n=2, per_shard=2, start=10, width=8)
    dd = atd.load_dataset(str(tmp_path / "*.tar"))
    assert sorted(dd) == ["test", "train"]
    assert dd.num_shards == {"test": 1, "train": 2}
    dd = atd.load_dataset(str(tmp_path / "{train,test}-000000.tar"))
    assert dd.num_shards == {"test": 1, "train": 1}


def test_typed_and_untyped_results(nested: Path) -> None:
    typed = atd.load_dataset(nested, Rec, split="validation")
    assert typed.sample_type is Rec
    first = typed.head(1)[0]
    assert isinstance(first, Rec) and first.label == 100 and first.x.shape == (16,)
    untyped = atd.load_dataset(nested, split="validation")
    assert untyped.sample_type is atd.DictSample
    sample = untyped.head(1)[0]
    assert isinstance(sample, atd.DictSample) and sample["label"] == 100 and sample["name"] == "s0100"


# ---------------------------------------------------------------------------------------------------- data_files
def test_data_files_dict_with_globs_and_lists(nested: Path) -> None:
    dd = atd.load_dataset(
        nested,
        data_files={
            "train": "train/part-00000[0-1].tar",
            "valid": ["valid/part-000000.tar"],
            "holdout": ["test/*.tar", "train/part-000003.tar"],
        },
    )
    assert sorted(dd) == ["holdout", "train", "validation"]
    assert labels(dd["train"]) == list(range(12))
    assert labels(dd["validation"]) == list(range(100, 105))
    assert labels(dd["holdout"]) == [*range(200, 206), 18, 19]


def test_data_files_str_and_list_are_train(nested: Path) -> None:
    dd = atd.load_dataset(nested, data_files="test/*.tar")
    assert list(dd) == ["train"] and labels(dd["train"]) == list(range(200, 206))
    absolute = [str(p) for p in sorted((nested / "train").glob("*.tar"))[2:]]
    dd = atd.load_dataset(nested, data_files=absolute)
    assert labels(dd["train"]) == list(range(12, 20))


def test_data_files_relative_to_a_file_path(nested: Path) -> None:
    ds = atd.load_dataset(nested / "train" / "part-000000.tar", data_files="part-00000[23].tar", split="train")
    assert labels(ds) == list(range(12, 20))


# ---------------------------------------------------------------------------------------------------- slicing
@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("train", list(range(20))),
        ("train[:10%]", [0, 1]),
        ("train[-5:]", list(range(15, 20))),
        ("train[10:20]+validation", [*range(10, 20), *range(100, 105)]),
        ("train[5:13]", list(range(5, 13))),  # across three shards
        ("train[25%:50%]", list(range(5, 10))),
        ("train[:-15]", list(range(5))),
        ("train[-3%:]", [19]),
        ("train[18:100]", [18, 19]),
        ("train[10:5]", []),
        ("valid[:2]", [100, 101]),
        ("test[1:3] + train[0:1]", [201, 202, 0]),
        ("validation[-1:]+test[:1]+train[-1:]", [104, 200, 19]),
    ],
)
def test_split_slicing_selects_exact_samples(nested: Path, expr: str, want: list[int]) -> None:
    ds = atd.load_dataset(nested, Rec, split=expr)
    assert isinstance(ds, atd.Dataset)
    assert labels(ds) == want
    assert len(ds) == len(want)
    assert sorted(r[0] for r in rows(ds.shuffled(seed=5))) == sorted(want)


def test_sliced_split_through_a_loader(nested: Path) -> None:
    ds = atd.load_dataset(nested, Rec, split="train[3:17]")
    got = [int(v) for b in ds.loader(batch_size=4, shuffle=True, seed=1) for v in b.label]
    assert sorted(got) == list(range(3, 17))


@pytest.mark.parametrize("expr", ["train[1:2:3]", "train[a:]", "train[:5", "train[1.5:]", "tr ain", ""])
def test_malformed_split_expressions(nested: Path, expr: str) -> None:
    with pytest.raises(atd.SplitError):
        atd.load_dataset(nested, split=expr)


def test_parse_split() -> None:
    terms = parse_split("training[:10%]+dev[-5:]")
    assert [t.name for t in terms] == ["train", "validation"]
    assert terms[0].stop == load_mod.Bound(10, True) and terms[0].start is None
    assert terms[1].start == load_mod.Bound(-5, False) and terms[1].stop is None


# ---------------------------------------------------------------------------------------------------- DatasetDict
def test_dataset_dict_with_one_split_proxies(flat: Path) -> None:
    dd = atd.load_dataset(str(flat / "mnist_train.tar"), Rec)
    assert list(dd) == ["train"]
    assert [s.label for s in dd.ordered()] == list(range(8))
    assert sorted(s.label for s in dd.shuffled(seed=2)) == list(range(8))
    assert [s.label for s in dd.head(3)] == [0, 1, 2]
    assert dd.list_shards() == [str(flat / "mnist_train.tar")]
    # dict methods stay dict methods (BUG, fixed: "get" was listed as proxied but dict.get always won)
    assert dd.get("train") is dd["train"] and dd.get("test") is None and len(dd) == 1
    assert dd["train"].get("00000004").label == 4
    assert [int(v) for b in dd.loader(batch_size=4, shuffle=False) for v in b.label] == list(range(8))
    assert dd.as_type(Rec).sample_type is Rec
    assert dd.summary()["samples"] == 8


def test_dataset_dict_with_several_splits_refuses_to_guess(flat: Path) -> None:
    dd = atd.load_dataset(flat)
    with pytest.raises(AttributeError, match=r"2 splits \(test, train\); select one first"):
        dd.ordered()
    assert not hasattr(dd, "loader")
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        dd.nonsense  # noqa: B018
    with pytest.raises(atd.SplitError, match=r"'validation' does not exist; available splits: \['test', 'train'\]"):
        dd["validation"]
    assert "train" in dd and "validation" not in dd
    assert "DatasetDict({'train'" in repr(dd) or "DatasetDict({'test'" in repr(dd)


def test_missing_split_lists_the_available_ones(nested: Path, flat: Path) -> None:
    with pytest.raises(atd.SplitError, match=r"available splits: \['test', 'train'\]"):
        atd.load_dataset(flat, split="validation")
    with pytest.raises(atd.SplitError, match=r"'extra' does not exist; available splits: \['test', 'train', 'val"):
        atd.load_dataset(nested, split="train[:5]+extra")


# ---------------------------------------------------------------------------------------------------- not found
def test_nothing_matches(tmp_path: Path, flat: Path) -> None:
    with pytest.raises(atd.ShardNotFoundError, match="no shard matches"):
        atd.load_dataset(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(atd.ShardNotFoundError, match="no shard matches") as info:
        atd.load_dataset(str(tmp_path / "missing" / "train.tar"))
    assert isinstance(info.value, FileNotFoundError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(atd.ShardNotFoundError, match=r"no \.tar shards in"):
        atd.load_dataset(tmp_path / "empty")
    with pytest.raises(atd.ShardNotFoundError, match="no files match"):
        atd.load_dataset(flat, data_files={"train": "*.parquet"})


# ---------------------------------------------------------------------------------------------------- resolvers
@pytest.fixture
def resolvers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The resolver list, restored after the test."""
    saved = list(load_mod._RESOLVERS)
    monkeypatch.setattr(load_mod, "_RESOLVERS", saved)
    return saved


def test_register_resolver_by_prefix(resolvers: list[Any], nested: Path) -> None:
    calls: list[tuple[str, Any, dict[str, Any]]] = []

    def resolve(path: str, sample_type: Any, **kwargs: Any) -> atd.DatasetDict:
        calls.append((path, sample_type, kwargs))
        return atd.load_dataset(nested, sample_type)

    atd.register_resolver("@local/", resolve)
    ds = atd.load_dataset("@local/digits", Rec, split="train[:3]+validation[-1:]")
    assert labels(ds) == [0, 1, 2, 104]
    dd = atd.load_dataset("@local/digits", Rec, readahead=1)
    assert sorted(dd) == ["test", "train", "validation"]
    assert calls[0] == ("@local/digits", Rec, {"split": "train[:3]+validation[-1:]"})
    assert calls[1] == ("@local/digits", Rec, {"split": None, "readahead": 1})


def test_register_resolver_by_predicate(resolvers: list[Any], flat: Path) -> None:
    def resolve(path: str, sample_type: Any, *, split: str | None = None, **kw: Any) -> atd.Dataset[Any]:
        return atd.load_dataset(flat / "mnist_test.tar", sample_type, split="test")

    atd.register_resolver(lambda p: p.endswith(".mnist"), resolve)
    ds = atd.load_dataset("digits.mnist", split="anything")  # a Dataset from the resolver is returned as is
    assert labels(ds) == list(range(50, 54))
    assert labels(atd.load_dataset(flat / "mnist_train.tar", split="train")) == list(range(8))  # others unaffected


def test_register_resolver_by_dotted_name(resolvers: list[Any], flat: Path, tmp_path: Path) -> None:
    mod = tmp_path / "dotted_resolver_mod.py"
    mod.write_text(
        "import atdata_torch as atd\n"
        f"ROOT = {str(flat)!r}\n"
        "def resolve(path, sample_type, *, split=None, **kw):\n"
        "    return atd.load_dataset(ROOT + '/mnist_test.tar', sample_type)\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        atd.register_resolver("dotted://", "dotted_resolver_mod:resolve")
        assert "dotted_resolver_mod" not in sys.modules  # registering imports nothing
        assert labels(atd.load_dataset("dotted://digits", split="test[:2]")) == [50, 51]
        assert "dotted_resolver_mod" in sys.modules
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("dotted_resolver_mod", None)


@pytest.mark.parametrize("bad", ["no_colon", "mod:", ":fn", "mod:fn()", "a b:c"])
def test_register_resolver_rejects_malformed_dotted_names(resolvers: list[Any], bad: str) -> None:
    with pytest.raises(ValueError, match=r"package\.module:function"):
        atd.register_resolver("x://", bad)


def test_leaf_resolvers_are_dotted_names_imported_on_use() -> None:
    # load.py imports no leaf: the index and AT Protocol resolvers are named by string, checked lazily.
    leaf_targets = [t for _, t in load_mod._RESOLVERS if isinstance(t, str)]
    assert "atdata_torch.index._resolve:resolve" in leaf_targets
    assert "atdata_torch.atmosphere._resolve:resolve" in leaf_targets
    code = (
        "import sys, atdata_torch.load as l; "
        "print(sorted(m for m in sys.modules if m.startswith(('atdata_torch.index', 'atdata_torch.atmosphere'))))"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------- remote
@pytest.mark.integration
def test_load_dataset_from_s3(s3_upload: Callable[..., str], moto_endpoint: str, tmp_path: Path) -> None:
    train = write_shards(tmp_path / "up", "train", n=6, per_shard=3, width=16)
    test = write_shards(tmp_path / "up", "test", n=3, per_shard=3, start=30, width=16)
    bucket = s3_upload([*train, *test], prefix="mnist/")
    opts = {"endpoint": moto_endpoint, "access_key": MOTO_ACCESS_KEY, "secret_key": MOTO_SECRET_KEY}
    dd = atd.load_dataset(f"s3://{bucket}/mnist/{{train,test}}-{{000000..000001}}.tar", Rec, **opts)
    assert sorted(dd) == ["test", "train"]
    assert len(dd["train"].list_shards()) == 2 and len(dd["test"].list_shards()) == 2
    assert labels(dd["train"]) == list(range(6))
    ds = atd.load_dataset(
        f"s3://{bucket}/mnist/train-{{000000..000001}}.tar",
        Rec,
        split="train[2:5]",
        cache_dir=str(tmp_path / "c"),
        **opts,
    )
    assert labels(ds) == [2, 3, 4]
    # test-000001.tar was never uploaded: a clear error when it is read.
    with pytest.raises(atd.ShardNotFoundError, match="NoSuchKey"):
        labels(dd["test"])


def test_load_dataset_over_http(http_root: Path, http_server: FaultServer, tmp_path: Path) -> None:
    write_shards(http_root, "mnist_train", n=6, per_shard=3, width=16)
    write_shards(http_root, "mnist_test", n=3, per_shard=3, start=30, width=16)
    dd = atd.load_dataset(
        f"{http_server.base_url}/mnist_{{train-000000,train-000001,test-000000}}.tar",
        Rec,
        cache_dir=str(tmp_path / "c"),
        retries=1,
    )
    assert sorted(dd) == ["test", "train"]
    assert labels(dd["train"]) == list(range(6)) and labels(dd["test"]) == [30, 31, 32]
    ds = atd.load_dataset(
        f"{http_server.base_url}/mnist_train-{{000000..000001}}.tar", Rec, split="train[-4:]", headers={"X-T": "1"}
    )
    assert labels(ds) == [2, 3, 4, 5]
    assert {r.headers.get("x-t") for r in http_server.requests() if "train" in r.path} >= {"1"}
