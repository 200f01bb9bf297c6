"""atdata_torch.config: every YAML in configs/ builds what it describes; strict keys and values; LightningCLI."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import atdata_torch as atd
from atdata_torch import config
from atdata_torch.config import ConfigError, DataConfig

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
HAVE_LIGHTNING = importlib.util.find_spec("lightning") is not None

pytestmark = [
    # lightning 2.6.6 still builds torch.utils._pytree.LeafSpec, which torch 2.15 deprecates (in self.log).
    pytest.mark.filterwarnings("ignore:`isinstance.treespec, LeafSpec.` is deprecated:FutureWarning"),
    # Lightning's advice to use more workers on machines with more cores (the CLI test uses 0 on purpose).
    pytest.mark.filterwarnings("ignore:The '.*' does not have many workers"),
]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 200-digit data set in a temporary directory, named by ATDATA_DIGITS (as the configs expect), with
    examples/ on sys.path (the configs' sample types are digits_data:...)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLES))
        digits_data = importlib.import_module("digits_data")
        d = tmp_path_factory.mktemp("digits")
        digits_data.write_digits(d, limit=200)
        mp.setenv("ATDATA_DIGITS", str(d))
        yield d


def test_there_are_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"digits.yaml", "loader.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_builds_its_loaders_and_datamodule(path: Path, digits: Path) -> None:
    cfg = config.load(path)
    assert cfg.splits and cfg.splits[0] == "train"
    for split in cfg.splits:
        ds = cfg.dataset(split)
        assert all(s.startswith(str(digits)) for s in ds.list_shards())
        loader = cfg.loader(split, rank=0, world_size=1)
        kw = cfg.loader_kwargs(split)
        assert len(loader) > 0
        batches = list(loader)
        assert len(batches) == len(loader)
        assert all(len(b) <= kw["batch_size"] for b in batches)
        assert sum(len(b) for b in batches) == len(ds) or kw["last_batch"] == "drop" or kw["drop_last"]
        first = batches[0]
        extra = [ds.source_field] if getattr(ds, "source_field", None) else []  # a mixture's source column
        assert first.fields == [f.name for f in ds.sample_type.__atdata_fields__] + extra
    if HAVE_LIGHTNING:
        dm = cfg.datamodule()
        dm.setup("fit")
        assert len(dm.train_dataloader()) == len(cfg.loader("train", rank=0, world_size=1))


def test_round_trip_through_to_dict(digits: Path) -> None:
    for path in CONFIGS:
        cfg = config.load(path)
        assert DataConfig.from_dict(cfg.to_dict()) == cfg


# ------------------------------------------------------------------------------------------------ python use
def test_classes_and_datasets_are_accepted_in_python(digits: Path) -> None:
    digits_data = importlib.import_module("digits_data")
    ds = atd.Dataset(str(digits / "val-*.tar"))  # untyped (DictSample)
    cfg = DataConfig(
        train=[str(digits / "train-*.tar")],
        val=ds,
        sample_type=digits_data.DigitSample,
        as_type=digits_data.DigitVector,
        batch_size=10,
    )
    assert cfg.dataset("val").sample_type is digits_data.DigitVector
    batch = next(iter(cfg.loader("val", rank=0, world_size=1)))
    assert tuple(batch.pixels.shape) == (10, 64)
    assert cfg.to_dict()["sample_type"] == "digits_data:DigitSample"


def test_viewed_datasets_pickle_for_spawned_workers(digits: Path) -> None:
    """Spawn / forkserver DataLoader workers (and ddp_spawn) receive the dataset by pickle, as_type stage included:
    a lens made by @atd.lens at module level pickles by reference (its getter's module name is the Lens)."""
    cfg = config.load(ROOT / "configs" / "digits.yaml")
    ds = cfg.dataset("val")
    again = pickle.loads(pickle.dumps(ds))
    assert again._stages[0][1].__self__ is importlib.import_module("digits_data").to_vector
    first, second = next(iter(ds.ordered(batch_size=4))), next(iter(again.ordered(batch_size=4)))
    assert first.keys == second.keys
    assert (first.pixels == second.pixels).all()


def test_eval_splits_are_read_in_order_with_their_own_batch_size(digits: Path) -> None:
    cfg = DataConfig(
        train="a.tar", test=str(digits / "test-*.tar"), batch_size=4, eval_batch_size=7, shuffle=True, last_batch="drop"
    )
    kw = cfg.loader_kwargs("test")
    assert (kw["batch_size"], kw["shuffle"], kw["last_batch"]) == (7, False, None)
    keys = [k for b in cfg.loader("test", rank=0, world_size=1) for k in b.keys]
    assert keys == sorted(keys) and len(keys) == 20


def test_environment_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATDATA_TEST_ROOT", "/shards")
    monkeypatch.delenv("ATDATA_TEST_UNSET", raising=False)
    assert config.expand_env("${ATDATA_TEST_ROOT}/a-{0..1}.tar") == "/shards/a-{0..1}.tar"
    assert config.expand_env("${ATDATA_TEST_UNSET:-here}/a.tar") == "here/a.tar"
    assert config.expand_env("$HOME-free text") == "$HOME-free text"  # only ${...} is replaced
    cfg = DataConfig(train="${ATDATA_TEST_UNSET}/train.tar")
    with pytest.raises(ConfigError, match="train: environment variable ATDATA_TEST_UNSET is not set"):
        cfg.dataset("train")


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"batchsize": 8}, r"unknown key 'batchsize' in the data config \(did you mean 'batch_size'\?\); allowed: "),
        ({"batch_size": "64"}, r"batch_size: expected an integer, got '64'"),
        ({"batch_size": 0}, r"batch_size: must be >= 1"),
        ({"num_workers": True}, r"num_workers: expected an integer"),
        ({"shuffle": "yes"}, r"shuffle: expected true or false"),
        ({"last_batch": "keep"}, r"last_batch: expected one of 'exact', 'drop', 'pad', got 'keep'"),
        ({"on_error": "ignore"}, r"on_error: expected one of 'raise', 'skip', 'warn'"),
        ({"train": 3}, r"train: expected a path / glob / brace pattern / URL"),
        ({"train": []}, r"train: expected a path"),
        ({"sample_type": 3}, r"sample_type: expected a 'module:Class' string or a class"),
        ({"loader_options": {"prefetch": 2}}, r"unknown loader option 'prefetch'.*did you mean 'prefetch_factor'"),
        ({"source_options": [1]}, r"source_options: expected a mapping"),
        ({"data": {"batch_size": 8}, "trainr": {}}, r"unknown top-level key 'trainr'.*did you mean 'trainer'"),
        ({"data": {"class_path": "my.OtherModule"}}, r"only AtdataDataModule configs are read"),
        ({"data": {"nope": 1}}, r"unknown key 'nope'"),
    ],
)
def test_bad_configs_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(doc)


def test_bad_types_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sample_type: cannot import module 'no_such_module'"):
        DataConfig(train="a.tar", sample_type="no_such_module:Sample").dataset("train")
    with pytest.raises(ConfigError, match=r"as_type: module 'atdata_torch' has no attribute 'Nope'"):
        DataConfig(train="a.tar", as_type="atdata_torch:Nope").dataset("train")
    with pytest.raises(ConfigError, match=r"sample_type: 'atdata_torch:collate' is a function, not a class"):
        config.resolve_type("atdata_torch:collate", key="sample_type")
    with pytest.raises(ConfigError, match=r"sample_type: atdata_torch.dataset:Dataset is not a @packable class"):
        DataConfig(train="a.tar", sample_type="atdata_torch.dataset:Dataset").dataset("train")
    assert config.resolve_type("atdata_torch.DictSample") is atd.DictSample  # "module.Class" works too


def test_missing_splits_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"test: no test data in this config \(splits with data: train\)"):
        DataConfig(train="a.tar").loader("test")
    with pytest.raises(ConfigError, match=r"unknown split 'valid'.*did you mean 'val'"):
        DataConfig(train="a.tar").loader("valid")
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- train.tar\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        config.load(listed)
    typo = tmp_path / "typo.yaml"
    typo.write_text("train: a.tar\nbatch_sise: 3\n")
    with pytest.raises(ConfigError, match=rf"^{typo}: unknown key 'batch_sise'"):
        config.load(typo)


def test_lightning_cli_class_path_form_is_read() -> None:
    doc = {
        "trainer": {"max_steps": 3},
        "data": {
            "class_path": "atdata_torch.integrations.lightning.AtdataDataModule",
            "init_args": {"train": "a.tar", "batch_size": 5},
        },
    }
    assert config.load(doc).batch_size == 5


# ------------------------------------------------------------------------------------------------ LightningCLI
@pytest.mark.skipif(not HAVE_LIGHTNING, reason="needs the lightning extra")
def test_lightning_cli_fits_from_the_digits_config(
    digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.cli import LightningCLI

    from atdata_torch.integrations.lightning import AtdataDataModule

    lightning_train = importlib.import_module("lightning_train")
    monkeypatch.setattr(sys, "argv", ["lightning_cli"])  # LightningCLI warns when args= and sys.argv both have any
    # lightning 2.6.6's LightningCLI calls ArgumentParser.add_instantiator, deprecated since jsonargparse 4.49.
    monkeypatch.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    args = [
        "--config",
        str(ROOT / "configs" / "digits.yaml"),
        "--trainer.max_steps=2",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.num_workers=0",
        "--data.persistent_workers=false",
    ]
    cli = LightningCLI(
        lightning_train.DigitClassifier, AtdataDataModule, args=["fit", *args], save_config_kwargs={"overwrite": True}
    )
    assert cli.trainer.global_step == 2
    dm = cli.datamodule
    assert isinstance(dm, AtdataDataModule)
    assert (dm.config.as_type, dm.config.batch_size, dm.config.last_batch) == ("digits_data:DigitVector", 32, "drop")
    assert dm.state_dict()["train_loader"]["position"] == 2 * 32

    built = LightningCLI(lightning_train.DigitClassifier, AtdataDataModule, args=args, run=False)
    expected = {
        **config.load(ROOT / "configs" / "digits.yaml").to_dict(),
        "num_workers": 0,
        "persistent_workers": False,
    }
    assert built.datamodule.config == DataConfig.from_dict(expected)
