"""How a pass reads a dataset: one validated, frozen :class:`ReadOptions`, and the keyword sets that build it.

Every front-end (``Dataset.ordered()`` / ``shuffled()`` / ``loader()``, ``Pipeline``, ``atd.nodes.source()``,
``DataConfig``) takes these settings as keywords; they are written out once here (:class:`OrderKeywords`,
:class:`ShuffleKeywords`, :class:`ReadKeywords`) and checked once, when a :class:`ReadOptions` is built.

Example:
    >>> from atdata_torch.options import ReadOptions
    >>> opts = ReadOptions(batch_size=32, shuffle=True, seed=1)
    >>> opts.batch_size, opts.last_batch_for(world_size=1), opts.last_batch_for(world_size=4)
    (32, 'exact', 'pad')
    >>> ReadOptions(on_error="ignore")
    Traceback (most recent call last):
    ...
    ValueError: on_error must be 'raise', 'skip' or 'warn', got 'ignore'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, TypedDict

from ._order import DEFAULT_BLOCK_SIZE, DEFAULT_WINDOW

__all__ = ["LastBatch", "OnError", "OrderKeywords", "ReadKeywords", "ReadOptions", "ShuffleKeywords"]

OnError = Literal["raise", "skip", "warn"]
LastBatch = Literal["exact", "drop", "pad"]


class OrderKeywords(TypedDict, total=False):
    """The keywords of ``Dataset.ordered()`` (besides ``batch_size``); see :class:`ReadOptions`."""

    drop_last: bool | None
    last_batch: LastBatch | None
    on_error: OnError
    rank: int | None
    world_size: int | None


class ShuffleKeywords(OrderKeywords, total=False):
    """The keywords of ``Dataset.shuffled()`` (besides ``batch_size``); see :class:`ReadOptions`."""

    seed: int
    block_size: int
    window: int


class ReadKeywords(ShuffleKeywords, total=False):
    """Every read setting as a keyword (``Pipeline(ds, **kw)``, ``atd.nodes.source(ds, **kw)``)."""

    batch_size: int | None
    shuffle: bool


@dataclass(frozen=True)
class ReadOptions:
    """The settings of a pass: order, batching, last batch, errors, topology.

    Attributes:
        batch_size: Samples per batch on this rank (``None``: yield samples).
        shuffle: Shuffle (two-level block/window permutation) or keep shard order.
        seed: Seed of the permutation.
        drop_last: ``True`` drops the last partial global batch; ``False`` keeps every sample (``"exact"`` on one
            rank, ``"pad"`` on several, so that every rank runs the same number of steps).
        last_batch: ``"exact"``, ``"drop"`` or ``"pad"``; overrides ``drop_last`` (see :meth:`last_batch_for`).
        on_error: ``"raise"``, or ``"skip"`` / ``"warn"`` undecodable samples, reported at the end of the epoch.
        block_size: Shuffle block size (consecutive samples moved together).
        window: Shuffle window, in blocks.
        rank: This process's rank; ``None`` detects it (torch.distributed, then ``RANK``).
        world_size: Number of ranks; ``None`` detects it.

    Raises:
        ValueError: for a ``batch_size`` below 1, an unknown ``on_error`` or ``last_batch``.
    """

    batch_size: int | None = None
    shuffle: bool = False
    seed: int = 0
    drop_last: bool | None = None
    last_batch: LastBatch | None = None
    on_error: OnError = "raise"
    block_size: int = DEFAULT_BLOCK_SIZE
    window: int = DEFAULT_WINDOW
    rank: int | None = None
    world_size: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.on_error not in ("raise", "skip", "warn"):
            raise ValueError(f"on_error must be 'raise', 'skip' or 'warn', got {self.on_error!r}")
        if self.last_batch is not None and self.last_batch not in ("exact", "drop", "pad"):
            raise ValueError(f"last_batch must be 'exact', 'drop' or 'pad', got {self.last_batch!r}")
        object.__setattr__(self, "seed", int(self.seed))

    def last_batch_for(self, world_size: int) -> LastBatch:
        """The effective last-batch policy on ``world_size`` ranks."""
        if self.last_batch is not None:
            return self.last_batch
        if self.drop_last:
            return "drop"
        return "exact" if world_size == 1 else "pad"

    def changed(self) -> list[str]:
        """The names of the settings that differ from their defaults, in field order."""
        default = asdict(ReadOptions())
        return [k for k, v in asdict(self).items() if v != default[k]]

    def to_dict(self) -> dict[str, Any]:
        """The settings as keywords (what :class:`ReadKeywords` names)."""
        return asdict(self)
