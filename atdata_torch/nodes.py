"""``torchdata.nodes`` source: compose atdata_torch datasets with ``Batcher``, ``ParallelMapper``, ``Prefetcher``...

:func:`source` turns a :class:`~atdata_torch.Dataset` or a :class:`~atdata_torch.Pipeline` into a
``torchdata.nodes.BaseNode`` that yields the pipeline's items (samples, or ``SampleBatch`` es when the pipeline is
batched) in the epoch's global order, sliced for this rank. Its state is global and small::

    {"epoch": 3, "position": 1200, "seed": 0, "fingerprint": "..."}

``position`` counts the samples of the epoch's global order consumed by all ranks together, so a state saved by
``torchdata.nodes.Loader.state_dict()`` resumes exactly (no sample repeated or skipped), also after ``filter()``
stages or skipped samples, and under another number of ranks. Each ``reset()`` without a state (a new
``iter(loader)``) runs the next epoch: a shuffled pipeline gives a new, reproducible permutation per pass.

torchdata.nodes has no worker processes of its own: parallelism comes from ``ParallelMapper`` (threads or
processes) over the map step, while this source reads in the thread that pulls from it.

Example:
    >>> import numpy as np, os, tempfile
    >>> import atdata_torch as atd
    >>> from torchdata.nodes import Batcher, Loader, Mapper
    >>> @atd.packable
    ... class Point:
    ...     x: atd.NDArray
    ...     label: int
    >>> ds = atd.write_samples([Point(x=np.full(2, i, np.float32), label=i) for i in range(10)],
    ...                        os.path.join(tempfile.mkdtemp(), "p.tar"), progress=False)
    >>> loader = Loader(Mapper(Batcher(atd.nodes.source(ds), 4, drop_last=False), atd.collate))
    >>> [b.label for b in loader]
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    >>> it = iter(loader); _ = next(it); state = loader.state_dict()   # after the first batch
    >>> loader.load_state_dict(state)
    >>> [b.label for b in loader]                                       # continues exactly
    [[4, 5, 6, 7], [8, 9]]
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
from torchdata.nodes import BaseNode

from ._epoch import CHUNK
from ._pipeline import Pipeline, SkipReport
from ._topology import Topology
from .dataset import Dataset
from .errors import SkippedSamplesWarning
from .loader import LoaderStateError
from .options import ReadKeywords, ReadOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["PipelineNode", "source"]

log = logging.getLogger("atdata_torch")

T = TypeVar("T")


class PipelineNode(BaseNode[T], Generic[T]):  # type: ignore[misc]
    """A ``torchdata.nodes`` source over a :class:`~atdata_torch.Pipeline` (see :func:`source`).

    Attributes:
        pipeline: The pipeline read (its order, batch size, rank and world size).
    """

    def __init__(self, pipeline: Pipeline[T]) -> None:
        super().__init__()
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"PipelineNode needs a Pipeline (ds.ordered() / ds.shuffled()), got {type(pipeline)}")
        self.pipeline = pipeline
        self._epoch = pipeline.epoch  # the epoch of the current (or, before the first reset, the next) pass
        self._position = 0
        self._advance = False  # the current pass began: a reset without a state moves to the next epoch
        self._it: Iterator[tuple[int, T]] | None = None
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        """The epoch of the current pass (before the first pass: of the next one)."""
        return self._epoch

    @property
    def position(self) -> int:
        """Samples of the current epoch's global order consumed (by all ranks together)."""
        return self._position

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` on the next reset without a state (the next ``iter()`` of a ``Loader``)."""
        self._epoch = int(epoch)
        self._advance = False

    def fingerprint(self) -> str:
        """The pipeline's fingerprint (shards, sample counts, shuffle settings), computed once."""
        if self._fingerprint is None:
            self._fingerprint = self.pipeline.fingerprint()
        return self._fingerprint

    # ------------------------------------------------------------------------------------------------ BaseNode
    def reset(self, initial_state: dict[str, Any] | None = None) -> None:
        """Start the next epoch, or, with a state from :meth:`get_state`, continue exactly where it was saved.

        Raises:
            LoaderStateError: when the state belongs to another dataset or seed.
        """
        super().reset(initial_state)
        if initial_state is not None:
            epoch, position = self._check(initial_state)
        else:
            epoch, position = (self._epoch + 1 if self._advance else self._epoch), 0
        self._epoch, self._position = epoch, position
        # A restored pass counts as begun (even one restored at its end): the next plain reset moves on.
        self._advance = initial_state is not None
        self._it = self._iterate(epoch, position)

    def next(self) -> T:
        self._advance = True
        if self._it is None:  # pragma: no cover - BaseNode resets before the first next()
            raise StopIteration
        position, item = next(self._it)
        self._position = position
        return item

    def get_state(self) -> dict[str, Any]:
        return {
            "epoch": self._epoch,
            "position": self._position,
            "seed": self.pipeline.seed,
            "fingerprint": self.fingerprint(),
        }

    def _check(self, state: dict[str, Any]) -> tuple[int, int]:
        if not isinstance(state, dict) or "epoch" not in state or "position" not in state:
            raise LoaderStateError(
                f"not an atdata_torch node state (expected keys 'epoch' and 'position'), got {state!r:.200}"
            )
        p = self.pipeline
        fp = state.get("fingerprint")
        if fp is not None and fp != self.fingerprint():
            raise LoaderStateError(
                f"the node state was saved for another dataset (fingerprint {fp}, this one's is "
                f"{self.fingerprint()}): the shards, their sample counts or the shuffle settings differ"
            )
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
            seed = int(state.get("seed", p.seed))
        except (TypeError, ValueError) as exc:
            raise LoaderStateError(
                f"malformed atdata_torch node state ({exc}): 'epoch', 'position', 'seed' must be integers"
            ) from None
        if seed != p.seed:
            raise LoaderStateError(f"the node state was saved with seed={seed}, this pipeline has seed={p.seed}")
        if epoch < 0 or position < 0:
            raise LoaderStateError(f"malformed atdata_torch node state: epoch={epoch}, position={position}")
        return epoch, position

    # ------------------------------------------------------------------------------------------------ reading
    def _iterate(self, epoch: int, start: int) -> Iterator[tuple[int, T]]:
        """(global samples consumed after the item, item) for this rank's items of ``epoch`` from ``start``.

        The pipeline's reader slices the epoch (as one worker: group ``j`` is the rank's step ``j``, see
        :meth:`EpochReader.groups <atdata_torch._epoch.EpochReader.groups>`), with the step index kept so that the
        position stays exact when a ``filter()`` or ``on_error="skip"`` drops items.
        """
        p = self.pipeline
        report = SkipReport()
        p.last_report = report
        g = p.global_batch_size
        pad = p.last_batch == "pad"
        with p.reader.begin(epoch, start, Topology(p.rank, p.world_size), report) as epass:
            n = len(epass.shard_of)

            def consumed(step: int) -> int:
                c = start + (step + 1) * g
                return c if pad else min(c, n)

            for j, positions in enumerate(epass.groups):  # one worker: group j is step j (or chunk j of steps)
                recs, kept = epass.read(positions)
                if p.batch_size is not None:
                    batch = p.decode_batch(recs, report, kept, epoch)
                    del recs  # the records' bytes may be download segments: back to the pool before the next read
                    if batch is not None:
                        yield consumed(j), batch  # type: ignore[misc]  # T is SampleBatch for a batched pipeline
                    continue
                for step, rec, pos in _steps(j, positions, recs, kept):
                    for _key, sample in p.decode_samples([rec], report, [pos], epoch):
                        yield consumed(step), sample
        if report:
            msg = f"atdata_torch epoch {epoch}: {report.summary()}"
            log.warning(msg)
            warnings.warn(msg, SkippedSamplesWarning, stacklevel=2)

    def __repr__(self) -> str:
        p = self.pipeline
        return (
            f"PipelineNode({p.dataset!r}, batch_size={p.batch_size}, shuffle={p.shuffle}, seed={p.seed}, "
            f"rank={p.rank}/{p.world_size}, epoch={self._epoch}, position={self._position})"
        )


def _steps(chunk: int, positions: np.ndarray, recs: list[Any], kept: list[int]) -> Iterator[tuple[int, Any, int]]:
    """``(step, record, position)`` for the records read from chunk ``chunk`` of a rank's steps (unbatched)."""
    wanted = positions.tolist()
    k = 0
    for rec, pos in zip(recs, kept, strict=True):
        while wanted[k] != pos:  # kept is an ordered subsequence of the positions read
            k += 1
        yield chunk * CHUNK + k, rec, pos
        k += 1


def source(data: Dataset[Any] | Pipeline[Any], **kw: Unpack[ReadKeywords]) -> PipelineNode[Any]:
    """A ``torchdata.nodes`` source node over a dataset or a pipeline, resumable exactly.

    Args:
        data: A :class:`~atdata_torch.Dataset` (read with the settings below) or a :class:`~atdata_torch.Pipeline`
            from ``ds.ordered()`` / ``ds.shuffled()`` (read as it is configured; the settings below must then be
            left at their defaults).
        batch_size: ``None`` (default) yields samples, to batch with ``torchdata.nodes.Batcher``; an int yields
            ``SampleBatch`` es of that size per rank (columnar decoding, faster), to convert with
            :func:`~atdata_torch.collate`.
        shuffle: Shuffle (a new permutation per epoch, a pure function of ``(seed, epoch)``) or keep shard order.
        seed: Seed of the permutation.
        drop_last, last_batch, on_error, block_size, window, rank, world_size: As in
            :meth:`~atdata_torch.Dataset.shuffled`. Rank and world size are detected (``torch.distributed``, then
            the environment) when left ``None``.

    Returns:
        A :class:`PipelineNode`: ``get_state()`` is ``{"epoch", "position", "seed", "fingerprint"}``; a reset without
        a state starts the next epoch (the first one starts the pipeline's current epoch, ``pipe.epoch``).
    """
    options = ReadOptions(**kw)
    if isinstance(data, Pipeline):
        extra = options.changed()
        if extra:
            raise TypeError(f"source(pipeline) reads the pipeline as configured; do not pass {', '.join(extra)}")
        return PipelineNode(data)
    if not isinstance(data, Dataset):
        raise TypeError(f"source() needs an atdata_torch Dataset or Pipeline, got {type(data).__name__}")
    return PipelineNode(Pipeline(data, options))
