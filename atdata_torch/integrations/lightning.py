"""``AtdataDataModule``: a Lightning ``LightningDataModule`` over atdata_torch datasets.

It builds one :class:`~atdata_torch.Loader` per split in ``setup()``, with the rank and world size of the trainer
(Lightning's DDP launcher sets no ``RANK``, and spawned workers have no process group, so they are passed
explicitly). The training loader's position is saved in every checkpoint and restored on resume, so a run
interrupted mid-epoch continues with exactly the batch that would have come next, on any number of ranks or
workers.

Where the position is saved: Lightning stores the state of stateful loaders under
``checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]``; the DataModule stores the same (global,
rank-independent) state under ``checkpoint["AtdataDataModule"]["train_loader"]`` and restores it before anything
can iterate the loader. The second copy covers Lightning-AI/pytorch-lightning#20550: a model that reads
``trainer.estimated_stepping_batches`` in ``configure_optimizers`` (``OneCycleLR``) makes Lightning skip its own
restore.

Needs the ``lightning`` extra: ``pip install 'atdata-torch[lightning]'``.

Example:
    >>> from atdata_torch.integrations.lightning import AtdataDataModule
    >>> dm = AtdataDataModule(train="data/train-{000000..000009}.tar", val="data/val-*.tar",
    ...                       sample_type="atdata_torch.schema:DictSample", batch_size=32, num_workers=2)
    >>> dm.config.splits
    ['train', 'val']
    >>> # trainer = lightning.Trainer(max_steps=1000); trainer.fit(model, datamodule=dm)
    >>> # trainer.fit(model, datamodule=dm, ckpt_path="last.ckpt")      # continues the sample stream exactly
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._order import DEFAULT_BLOCK_SIZE, DEFAULT_WINDOW
from ..config import SPLITS, DataConfig, load
from ..dataset import Dataset
from ..errors import MissingDependencyError
from ..options import LastBatch, OnError

try:
    import lightning.pytorch as pl
    from lightning.pytorch.trainer.states import TrainerFn
except ImportError as _exc:
    raise MissingDependencyError.for_extra("lightning", "lightning", "atdata_torch.integrations.lightning") from _exc

if TYPE_CHECKING:
    from ..loader import Loader

__all__ = ["AtdataDataModule"]

# Which splits a Lightning stage reads.
_STAGE_SPLITS: dict[str, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}

# Lightning warns, whenever an IterableDataset has __len__, that the length "could be inaccurate" with several
# workers (lightning/pytorch/utilities/data.py, has_len_all_ranks). Ours is exact: the loader's __len__ is the
# number of batches this rank yields in the epoch (the pipeline splits each rank's batches between its workers,
# not the samples), and it is what makes Lightning skip its one-batch prefetch, which would otherwise save the
# loader state one batch ahead and skip a batch on resume.
_LEN_WARNING = r"Your `IterableDataset` has `__len__` defined"


def _silence_len_warning() -> None:
    # Installed when a loader is handed to Lightning (filterwarnings replaces an identical filter, so repeated
    # calls do not pile up). Installed at that point rather than at import so that it also holds inside
    # warnings.catch_warnings() blocks (pytest's per-test warning filters, for instance).
    warnings.filterwarnings("ignore", message=_LEN_WARNING, category=UserWarning)


class AtdataDataModule(pl.LightningDataModule):
    """A ``LightningDataModule`` over typed WebDataset shards, with an exact mid-epoch resume.

    The arguments are those of :class:`~atdata_torch.config.DataConfig` (a YAML ``data:`` section of a
    ``LightningCLI`` config has the same keys).

    Args:
        train: Training data: a path / glob / brace pattern / URL, a list of them, or an ``atd.Dataset`` (an
            ``atd.mix(...)`` mixture too); or a mixture spec ``{"mix": [{"data": ..., "weight": ...}, ...]}`` (see
            ``atdata_torch.config``).
            ``${NAME}`` / ``${NAME:-default}`` are read from the environment.
        val: Validation data (read in order).
        test: Test data (read in order).
        predict: Prediction data (read in order).
        sample_type: The stored sample class, or ``"module:Class"``.
        as_type: A view type (or ``"module:Class"``) reached through the lens registry.
        batch_size: Samples per training batch per rank.
        eval_batch_size: Samples per batch for val / test / predict (default: ``batch_size``).
        num_workers: DataLoader worker processes per loader.
        seed: Seed of the shuffle.
        shuffle: Shuffle the training data (evaluation data is never shuffled).
        block_size: Shuffle block size.
        window: Shuffle window, in blocks.
        drop_last: Drop the last partial training batch.
        last_batch: ``"exact"``, ``"drop"`` or ``"pad"`` for training (overrides ``drop_last``). The default
            is exact on one device and padded on several, so that every rank runs the same number of steps.
        eval_last_batch: The same for val / test / predict.
        pin_memory: Pin batches (useful with a GPU).
        persistent_workers: Keep workers alive between epochs.
        on_error: ``"raise"``, ``"skip"`` or ``"warn"`` for undecodable samples.
        source_options: Options of remote sources (``cache_dir``, ``headers``, ``endpoint`` ...).
        loader_options: Other ``StatefulDataLoader`` arguments (``prefetch_factor``, ``timeout`` ...).

    Batches are :class:`~atdata_torch.TensorBatch` es (``batch.image`` a tensor, ``batch.label`` a list,
    ``batch.keys`` the sample keys); Lightning moves them to the device through ``TensorBatch.to``.

    Example:
        >>> dm = AtdataDataModule("data/train-*.tar", batch_size=16, last_batch="drop")
        >>> dm.config.batch_size, dm.config.last_batch
        (16, 'drop')
        >>> # dm = AtdataDataModule.from_config("configs/digits.yaml")
    """

    def __init__(
        self,
        train: str | os.PathLike[str] | list[str] | Dataset[Any] | dict[str, Any] | None = None,
        val: str | os.PathLike[str] | list[str] | Dataset[Any] | dict[str, Any] | None = None,
        test: str | os.PathLike[str] | list[str] | Dataset[Any] | dict[str, Any] | None = None,
        predict: str | os.PathLike[str] | list[str] | Dataset[Any] | dict[str, Any] | None = None,
        *,
        sample_type: type | str | None = None,
        as_type: type | str | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
        drop_last: bool | None = None,
        last_batch: LastBatch | None = None,
        eval_last_batch: LastBatch | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        on_error: OnError = "raise",
        source_options: dict[str, Any] | None = None,
        loader_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.config = DataConfig(
            train=train,
            val=val,
            test=test,
            predict=predict,
            sample_type=sample_type,
            as_type=as_type,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            shuffle=shuffle,
            block_size=block_size,
            window=window,
            drop_last=drop_last,
            last_batch=last_batch,
            eval_last_batch=eval_last_batch,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            on_error=on_error,
            source_options=source_options,
            loader_options=loader_options,
        )
        # Plain values only (classes as "module:Class", datasets given as objects left out), so that checkpoints
        # stay loadable with torch.load(weights_only=True) and load_from_checkpoint can rebuild the module.
        self.save_hyperparameters(
            {k: v for k, v in self.config.to_dict().items() if not isinstance(v, Dataset)}, logger=False
        )
        self._loaders: dict[str, Loader] = {}
        self._topology: dict[str, tuple[int | None, int | None]] = {}
        self._pending_train_state: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, config: DataConfig | Mapping[str, Any] | str | os.PathLike[str]) -> AtdataDataModule:
        """Build from a :class:`~atdata_torch.config.DataConfig`, a mapping or a YAML file.

        Example:
            >>> AtdataDataModule.from_config({"train": "data/train-*.tar", "batch_size": 8}).config.batch_size
            8
        """
        cfg = config if isinstance(config, DataConfig) else load(config)
        fields = {k: getattr(cfg, k) for k in cfg.to_dict()}
        return cls(**fields)

    # -------------------------------------------------------------------------------------------- topology
    def _rank_world(self) -> tuple[int | None, int | None]:
        trainer = self._trainer_or_none()
        if trainer is None:
            return None, None  # detected by the loader (torch.distributed, then the environment)
        return int(trainer.global_rank), int(trainer.world_size)

    def _trainer_or_none(self) -> pl.Trainer | None:
        return self.trainer

    # -------------------------------------------------------------------------------------------- hooks
    def setup(self, stage: str) -> None:
        """Build the loaders the stage needs (``fit``: train and val), on this trainer's rank and world size.

        Loaders are kept between stages (a second ``fit`` continues the epoch count); they are rebuilt when the
        rank or world size changed. Without a trainer, the rank and world size are detected (``torch.distributed``,
        then the environment).

        Example:
            >>> dm = AtdataDataModule("data/train-*.tar")
            >>> # dm.setup("fit"); next(iter(dm.train_dataloader()))     # what Lightning does
        """
        for split in _STAGE_SPLITS.get(stage, SPLITS):
            if getattr(self.config, split) is not None:
                self._loader(split)

    def _loader(self, split: str) -> Loader:
        topo = self._rank_world()
        loader = self._loaders.get(split)
        if loader is None or self._topology.get(split) != topo:
            loader = self.config.loader(split, rank=topo[0], world_size=topo[1])
            self._loaders[split] = loader
            self._topology[split] = topo
            if split == "train" and self._pending_train_state is not None:
                loader.load_state_dict(self._pending_train_state)
                self._pending_train_state = None
        return loader

    def _eval_loader(self, split: str) -> Loader | list[Loader]:
        if getattr(self.config, split) is None:
            return []  # Lightning skips the loop
        _silence_len_warning()
        return self._loader(split)

    def train_dataloader(self) -> Loader:
        """The training loader (shuffled with ``seed``; the epoch advances on each pass).

        Raises:
            ConfigError: when no ``train`` data was given.

        Example:
            >>> # for batch in dm.train_dataloader(): batch.image, batch.label, batch.keys
        """
        _silence_len_warning()
        return self._loader("train")

    def val_dataloader(self) -> Loader | list[Loader]:
        """The validation loader, in order (an empty list when no ``val`` data was given: no validation).

        Example:
            >>> AtdataDataModule("data/train-*.tar").val_dataloader()
            []
        """
        return self._eval_loader("val")

    def test_dataloader(self) -> Loader | list[Loader]:
        """The test loader, in order (an empty list when no ``test`` data was given).

        Example:
            >>> # trainer.test(model, datamodule=AtdataDataModule(test="data/test-*.tar", sample_type=...))
        """
        return self._eval_loader("test")

    def predict_dataloader(self) -> Loader | list[Loader]:
        """The prediction loader, in order (an empty list when no ``predict`` data was given).

        Example:
            >>> # predictions = trainer.predict(model, datamodule=AtdataDataModule(predict="data/new-*.tar"))
        """
        return self._eval_loader("predict")

    # -------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The training loader's global position (the same on every rank), saved in Lightning checkpoints.

        Example:
            >>> AtdataDataModule("data/train-*.tar").state_dict()     # nothing read yet
            {}
            >>> # {'train_loader': {'epoch': 1, 'position': 64, 'seed': 0, 'fingerprint': ...}} after some steps
        """
        loader = self._loaders.get("train")
        if loader is not None:
            return {"train_loader": loader.state_dict()}
        if self._pending_train_state is not None:
            return {"train_loader": dict(self._pending_train_state)}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training loader at the saved position (only when fitting: evaluation never moves it).

        Raises:
            LoaderStateError: when the state belongs to another dataset or seed.

        Example:
            >>> # dm.load_state_dict(torch.load("last.ckpt")["AtdataDataModule"])   # Lightning does this on resume
        """
        state = state_dict.get("train_loader")
        if state is None:
            return
        trainer = self._trainer_or_none()
        if trainer is not None and trainer.state.fn is not None and trainer.state.fn != TrainerFn.FITTING:
            return
        loader = self._loaders.get("train")
        if loader is not None:
            loader.load_state_dict(state)
        else:
            self._pending_train_state = dict(state)

    def __str__(self) -> str:
        # LightningDataModule.__str__ builds every loader to print its size; a repr must not have side effects.
        return repr(self)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"AtdataDataModule(splits={c.splits}, batch_size={c.batch_size}, num_workers={c.num_workers}, "
            f"seed={c.seed}, shuffle={c.shuffle})"
        )
