"""Typed data configs: YAML (or a dict) -> :class:`DataConfig` -> datasets, loaders and a Lightning DataModule.

A config names the datasets of each split and the loader settings. Its keys are exactly the arguments of
:class:`~atdata_torch.integrations.lightning.AtdataDataModule`, so the same mapping is a ``data:`` section of a
``LightningCLI`` config::

    # configs/loader.yaml
    train: ${ATDATA_DIGITS:-examples/data/digits}/train-*.tar
    val: ${ATDATA_DIGITS:-examples/data/digits}/val-*.tar
    sample_type: digits_data:DigitSample
    as_type: digits_data:DigitVector
    batch_size: 64
    num_workers: 2
    last_batch: drop

Rules:

- Unknown keys and wrongly typed values are errors (:class:`ConfigError`, naming the key and listing the allowed
  ones).
- Dataset specs are a path, a glob, a brace pattern (``train-{000000..000009}.tar``), a URL, or a list of them.
  ``${NAME}`` and ``${NAME:-default}`` are replaced by environment variables when the dataset is built (an unset
  variable without a default is an error); relative paths are relative to the working directory.
- ``sample_type`` and ``as_type`` are importable ``"module:Class"`` strings (or the classes themselves, in
  Python). ``as_type`` views the samples through the lens registry, so the module that defines the lens must be
  imported: defining the lens next to the view type does that.
- A ``LightningCLI`` config (a mapping with a top-level ``data:`` key) is accepted by :func:`load`: its ``data``
  section (or ``data.init_args``) is read; the other top-level keys belong to Lightning.

Example:
    >>> cfg = DataConfig.from_dict({"train": "data/train-*.tar", "batch_size": 32, "last_batch": "drop"})
    >>> cfg.splits, cfg.batch_size
    (['train'], 32)
    >>> DataConfig.from_dict({"batchsize": 32})
    Traceback (most recent call last):
    ...
    atdata_torch.errors.ConfigError: unknown key 'batchsize' in the data config (did you mean 'batch_size'?); ...
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, get_args

from ._config_values import (
    TypeSpec,
    _check_bool,
    _check_choice,
    _check_int,
    _fail,
    _unknown,
    expand_env,
    resolve_type,
    type_name,
)
from ._mix_config import check_mix_spec, mixture_from_spec
from ._order import DEFAULT_BLOCK_SIZE, DEFAULT_WINDOW
from .dataset import Dataset
from .errors import ConfigError
from .options import LastBatch, OnError
from .schema import DictSample, PackableSample

if TYPE_CHECKING:
    from .integrations.lightning import AtdataDataModule
    from .loader import Loader

__all__ = [
    "SPLITS",
    "ConfigError",
    "DataConfig",
    "DatasetSpec",
    "TypeSpec",
    "expand_env",
    "load",
    "resolve_type",
    "type_name",
]

#: What a split may be given as: a path / glob / brace pattern / URL, a list of them, or a ready dataset; or (issue
#: 18) a weighted mixture of such sources, a mapping ``{mix: [{data, weight, repeat}, ...], stop, ...}``.
DatasetSpec = Union[str, "os.PathLike[str]", Sequence[str], "Dataset[Any]", Mapping[str, Any]]

#: The splits a config can name, in Lightning's order.
SPLITS = ("train", "val", "test", "predict")

# Top-level keys of a LightningCLI subcommand config (``fit --config x.yaml``); only ``data`` is read here.
_CLI_KEYS = (
    "seed_everything",
    "trainer",
    "model",
    "data",
    "optimizer",
    "lr_scheduler",
    "ckpt_path",
    "weights_only",
    "verbose",
    "return_predictions",
)


def _loader_option_names() -> frozenset[str]:
    from torchdata.stateful_dataloader import StatefulDataLoader

    params = set(inspect.signature(StatefulDataLoader.__init__).parameters)
    # Set by Loader / DataConfig themselves, or meaningless for a batched IterableDataset.
    params -= {"self", "dataset", "batch_size", "shuffle", "sampler", "batch_sampler", "num_workers"}
    params -= {"pin_memory", "drop_last", "persistent_workers"}
    return frozenset(params)


@dataclass(frozen=True)
class DataConfig:
    """Datasets per split and loader settings; builds loaders, datasets and a Lightning DataModule.

    The field names are the arguments of :class:`~atdata_torch.integrations.lightning.AtdataDataModule`.

    Args:
        train: The training data: a path / glob / brace pattern / URL, a list of them, or an ``atd.Dataset``.
        val: The validation data (read in order).
        test: The test data (read in order).
        predict: The prediction data (read in order).
        sample_type: The stored sample class, or ``"module:Class"`` (default: ``DictSample``, or the type of a
            given dataset).
        as_type: A view type (``"module:Class"``) reached through the lens registry, or ``None``.
        batch_size: Samples per batch per rank (training).
        eval_batch_size: Samples per batch for val / test / predict (default: ``batch_size``).
        num_workers: DataLoader worker processes per loader.
        seed: Seed of the shuffle (its order is a pure function of seed and epoch).
        shuffle: Shuffle the training data (evaluation data is never shuffled).
        block_size: Shuffle block size (consecutive samples moved together).
        window: Shuffle window, in blocks (samples are permuted inside a window).
        drop_last: Drop the last partial training batch (see ``Dataset.loader``).
        last_batch: ``"exact"``, ``"drop"`` or ``"pad"`` for training; overrides ``drop_last``. Default: exact
            on one rank, padded on several (every rank runs the same number of steps).
        eval_last_batch: The same for val / test / predict (default as above).
        pin_memory: Pin batches for faster host-to-device copies.
        persistent_workers: Keep workers alive between epochs.
        on_error: ``"raise"``, ``"skip"`` or ``"warn"`` for undecodable samples.
        source_options: Options of remote sources (``cache_dir``, ``headers``, ``endpoint`` ...).
        loader_options: Other ``StatefulDataLoader`` arguments (``prefetch_factor``, ``timeout``,
            ``multiprocessing_context`` ...).

    Example:
        >>> cfg = DataConfig(train="data/train-*.tar", val="data/val-*.tar", batch_size=32)
        >>> cfg.splits
        ['train', 'val']
        >>> # loader = cfg.loader("train")      # an atd.Loader over data/train-*.tar
        >>> # dm = cfg.datamodule()             # an AtdataDataModule (needs the "lightning" extra)
    """

    train: DatasetSpec | None = None
    val: DatasetSpec | None = None
    test: DatasetSpec | None = None
    predict: DatasetSpec | None = None
    sample_type: TypeSpec | None = None
    as_type: TypeSpec | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    seed: int = 0
    shuffle: bool = True
    block_size: int = DEFAULT_BLOCK_SIZE
    window: int = DEFAULT_WINDOW
    drop_last: bool | None = None
    last_batch: LastBatch | None = None
    eval_last_batch: LastBatch | None = None
    pin_memory: bool = False
    persistent_workers: bool = False
    on_error: OnError = "raise"
    source_options: dict[str, Any] | None = None
    loader_options: dict[str, Any] | None = None

    # -------------------------------------------------------------------------------------------- validation
    def __post_init__(self) -> None:
        for split in SPLITS:
            _check_spec(split, getattr(self, split))
        for key in ("sample_type", "as_type"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, (str, type)):
                raise _fail(key, f"expected a 'module:Class' string or a class, got {type(value).__name__}")
        _check_int("batch_size", self.batch_size, minimum=1)
        if self.eval_batch_size is not None:
            _check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        _check_int("num_workers", self.num_workers, minimum=0)
        _check_int("seed", self.seed)
        _check_int("block_size", self.block_size, minimum=1)
        _check_int("window", self.window, minimum=1)
        for key in ("shuffle", "pin_memory", "persistent_workers"):
            _check_bool(key, getattr(self, key))
        if self.drop_last is not None:
            _check_bool("drop_last", self.drop_last)
        for key in ("last_batch", "eval_last_batch"):
            if getattr(self, key) is not None:
                _check_choice(key, getattr(self, key), get_args(LastBatch))
        _check_choice("on_error", self.on_error, get_args(OnError))
        for key in ("source_options", "loader_options"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, Mapping) and all(isinstance(k, str) for k in value)):
                raise _fail(key, f"expected a mapping of option names to values, got {type(value).__name__}")
        if self.loader_options:
            allowed = _loader_option_names()
            for name in self.loader_options:
                if name not in allowed:
                    raise _unknown(f"loader_options.{name}", name, allowed, "loader option")

    # -------------------------------------------------------------------------------------------- building
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataConfig:
        """Build from a mapping with exactly the field names as keys (unknown keys are errors).

        Example:
            >>> DataConfig.from_dict({"train": ["a.tar", "b.tar"], "num_workers": 2}).num_workers
            2
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a data config must be a mapping of keys to values, got {type(data).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in allowed:
                raise _unknown(str(key), str(key), allowed, "key", where="the data config")
        return cls(**dict(data))

    @property
    def splits(self) -> list[str]:
        """The splits that have data, in the order train, val, test, predict.

        Example:
            >>> DataConfig(test="t.tar", train="a.tar").splits
            ['train', 'test']
        """
        return [s for s in SPLITS if getattr(self, s) is not None]

    def dataset(self, split: str) -> Dataset[Any]:
        """The dataset of a split, typed (``sample_type``) and viewed (``as_type``).

        Raises:
            ConfigError: for an unknown split, a split without data, or a type that cannot be imported.
            LensNotFoundError: when no lens reaches ``as_type``.

        Example:
            >>> ds = DataConfig(train="data/train-{000000..000002}.tar").dataset("train")
            >>> ds.list_shards()[-1], ds.sample_type.__name__
            ('data/train-000002.tar', 'DictSample')
        """
        spec = self._spec(split)
        sample_type = resolve_type(self.sample_type, key="sample_type") if self.sample_type is not None else None
        if sample_type is not None and not (sample_type is DictSample or issubclass(sample_type, PackableSample)):
            raise _fail("sample_type", f"{type_name(sample_type)} is not a @packable class (nor DictSample)")
        if isinstance(spec, Mapping):  # issue 18: a weighted mixture of sources
            ds: Dataset[Any] = mixture_from_spec(split, spec, lambda s: self._source(split, s, sample_type))
        else:
            ds = self._source(split, spec, sample_type)
        if self.as_type is not None:
            ds = ds.as_type(resolve_type(self.as_type, key="as_type"))
        return ds

    def loader_kwargs(self, split: str) -> dict[str, Any]:
        """The keyword arguments of ``Dataset.loader()`` for a split (training settings only for ``"train"``).

        Example:
            >>> kw = DataConfig(batch_size=8, eval_batch_size=100, last_batch="drop").loader_kwargs("val")
            >>> kw["batch_size"], kw["shuffle"], kw["last_batch"]
            (100, False, None)
        """
        self._check_split(split)
        train = split == "train"
        return {
            "batch_size": self.batch_size if train else (self.eval_batch_size or self.batch_size),
            "shuffle": self.shuffle if train else False,
            "seed": self.seed,
            "num_workers": self.num_workers,
            "drop_last": self.drop_last if train else None,
            "last_batch": self.last_batch if train else self.eval_last_batch,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "on_error": self.on_error,
            "block_size": self.block_size,
            "window": self.window,
            **(self.loader_options or {}),
        }

    def loader(self, split: str = "train", *, rank: int | None = None, world_size: int | None = None) -> Loader:
        """A ready :class:`~atdata_torch.Loader` for a split (``rank`` / ``world_size``: ``None`` detects them).

        Example:
            >>> # for batch in load("configs/loader.yaml").loader("train"): ...
        """
        return self.dataset(split).loader(rank=rank, world_size=world_size, **self.loader_kwargs(split))

    def datamodule(self) -> AtdataDataModule:
        """An :class:`~atdata_torch.integrations.lightning.AtdataDataModule` with these settings.

        Raises:
            MissingDependencyError: without the ``lightning`` extra.

        Example:
            >>> # trainer.fit(model, datamodule=load("configs/digits.yaml").datamodule())
        """
        # Looked up by name: the integration builds on this module (config -> lightning would be an import cycle).
        module = importlib.import_module("atdata_torch.integrations.lightning")
        datamodule: AtdataDataModule = module.AtdataDataModule.from_config(self)
        return datamodule

    def to_dict(self) -> dict[str, Any]:
        """The fields as a mapping ``from_dict`` reads back; classes become ``"module:Class"`` strings.

        Dataset objects given in Python are kept as they are (they have no text form).

        Example:
            >>> DataConfig(sample_type=DictSample).to_dict()["sample_type"]
            'atdata_torch.schema:DictSample'
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, type):
                value = type_name(value)
            elif isinstance(value, os.PathLike):
                value = os.fspath(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, (list, tuple)):
                value = [os.fspath(v) for v in value]
            out[f.name] = value
        return out

    # -------------------------------------------------------------------------------------------- helpers
    def _source(self, split: str, spec: Any, sample_type: type | None) -> Dataset[Any]:
        if isinstance(spec, Dataset):
            return spec if sample_type is None else spec.as_type(sample_type)
        urls: str | list[str]
        if isinstance(spec, (str, os.PathLike)):
            urls = expand_env(os.fspath(spec), key=split)
        else:
            urls = [expand_env(os.fspath(s), key=split) for s in spec]
        return Dataset(urls, sample_type=sample_type, **(self.source_options or {}))

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise _unknown("split", split, SPLITS, "split")

    def _spec(self, split: str) -> DatasetSpec:
        self._check_split(split)
        spec: DatasetSpec | None = getattr(self, split)
        if spec is None:
            have = ", ".join(self.splits) or "none"
            raise _fail(split, f"no {split} data in this config (splits with data: {have})")
        return spec


def load(source: str | os.PathLike[str] | Mapping[str, Any]) -> DataConfig:
    """Read a data config from a YAML file or a mapping.

    A ``LightningCLI`` config (a top-level ``data:`` key, optionally ``class_path`` / ``init_args``) is accepted:
    its data section is read, and its other top-level keys must be ``LightningCLI`` keys.

    Raises:
        ConfigError: for a malformed file, unknown keys (named, with the allowed ones listed) or wrong values.

    Example:
        >>> load({"data": {"train": "shards/train-*.tar", "batch_size": 16}, "trainer": {"max_steps": 10}}).batch_size
        16
    """
    if isinstance(source, Mapping):
        doc: Any = source
        where = "the data config"
    else:
        import yaml

        path = os.fspath(source)
        where = path
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where}: a data config must be a mapping of keys to values, got {type(doc).__name__}")
    if "data" in doc:
        for key in doc:
            if key not in _CLI_KEYS:
                raise _unknown(str(key), str(key), _CLI_KEYS, "top-level key", where=f"{where} (a LightningCLI config)")
        doc = _data_section(doc["data"], where)
    try:
        return DataConfig.from_dict(doc)
    except ConfigError as exc:
        if where != "the data config" and not exc.message.startswith(where):
            raise ConfigError(f"{where}: {exc.message}") from None
        raise


def _data_section(data: Any, where: str) -> Any:
    if data is None:
        return {}
    if not isinstance(data, Mapping) or "class_path" not in data:
        return data
    extra = set(data) - {"class_path", "init_args", "dict_kwargs"}
    if extra:
        raise _unknown(f"data.{sorted(extra)[0]}", sorted(extra)[0], ("class_path", "init_args"), "key", where=where)
    cls_name = str(data["class_path"]).replace(":", ".").rsplit(".", 1)[-1]
    if cls_name != "AtdataDataModule":
        raise ConfigError(f"{where}: data.class_path is {data['class_path']!r}; only AtdataDataModule configs are read")
    return data.get("init_args") or {}


def _check_spec(key: str, value: Any) -> None:
    if value is None or isinstance(value, (str, os.PathLike, Dataset)):
        return
    if isinstance(value, Mapping):  # issue 18: a weighted mixture
        check_mix_spec(key, value)
        return
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return
    raise _fail(
        key,
        f"expected a path / glob / brace pattern / URL, a non-empty list of them, a Dataset or a mixture "
        f"({{mix: [{{data: ..., weight: ...}}, ...]}}); got {value!r}",
    )
