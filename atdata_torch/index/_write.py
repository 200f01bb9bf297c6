"""Writing an entry's shards for :meth:`Index.write_samples <atdata_torch.index.Index.write_samples>`.

The index needs four things of a shard writer (``write``, ``close``, ``abort`` and the finished ``shards``); they
are the :class:`ShardSink` protocol. The default sink is the package's public ``atdata_torch.ShardWriter``, looked
up when shards are written, so the index depends on the writer's public API only, not on its module.

Example:
    >>> import os, tempfile, numpy as np, atdata_torch as atd
    >>> from pathlib import Path
    >>> @atd.packable
    ... class Num:
    ...     x: atd.NDArray
    >>> written: list[str] = []
    >>> urls, n, t, hints = write_splits({None: [Num(np.arange(3.0))] * 3}, Path(tempfile.mkdtemp()), "nums",
    ...                                  written, typed=True, maxcount=2, maxsize=None, progress=False)
    >>> n, t.__name__, len(urls), hints.hints["x"].shape
    (3, 'Num', 2, [3])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from .._sidecar import SIDECAR_SUFFIX
from ..errors import SchemaError
from ..records import HintTracker
from ..schema import PackableSample

__all__ = ["OpenSink", "ShardSink", "remove_shards", "sha256_of", "shard_writer", "write_splits"]


class ShardSink(Protocol):
    """What the index needs of a shard writer (``atdata_torch.ShardWriter`` is one)."""

    shards: list[str]
    """The shards finished so far, in order."""

    def write(self, sample: Any) -> Any:
        """Write one sample (a new shard starts when the current one is full)."""
        ...

    def close(self) -> None:
        """Finish the current shard."""
        ...

    def abort(self) -> None:
        """Drop the shard being written; finished shards stay."""
        ...


OpenSink = Callable[[str, int | None, int | None], ShardSink]
"""``open_sink(pattern, maxcount, maxsize)``: a sink writing shards named ``pattern % i``."""


def shard_writer(pattern: str, maxcount: int | None, maxsize: int | None) -> ShardSink:
    """The default sink: the package's public ``ShardWriter`` (looked up here, when the index writes)."""
    from .. import ShardWriter

    return ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize)


def sink_for(manifest: bool, pack: int | None) -> OpenSink | None:
    """The sink ``Index.write_samples`` writes through: ``None`` (the default one) unless it writes manifests
    (the original's ``manifest=True``) or the compact layout (``pack=``)."""
    if not manifest and pack is None:
        return None
    from .. import ShardWriter

    return lambda pattern, maxcount, maxsize: ShardWriter(
        pattern, maxcount=maxcount, maxsize=maxsize, manifest=manifest, pack=pack
    )


def remove_shards(shards: Iterable[str]) -> None:
    """Delete shards, their sidecars and manifests (what a failed ``write_samples`` leaves behind); missing files
    are fine."""
    from ..manifest import manifest_paths

    for shard in shards:
        for path in (shard, shard + SIDECAR_SUFFIX, *manifest_paths(shard)):
            with contextlib.suppress(OSError):
                os.unlink(path)


def sha256_of(shard: str) -> str:
    """The SHA-256 of a shard: from its sidecar when the writer recorded it there, else read from the file."""
    try:
        with open(shard + SIDECAR_SUFFIX, "rb") as f:
            digest = json.loads(f.read()).get("sha256")
        if isinstance(digest, str) and digest:
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with open(shard, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_splits(
    splits: Mapping[str | None, Iterable[Any]],
    target: Path,
    name: str,
    written: list[str],
    *,
    typed: bool,
    maxcount: int | None,
    maxsize: int | None,
    progress: bool | None,
    open_sink: OpenSink | None = None,
) -> tuple[list[str], int, type | None, HintTracker]:
    """Write each split's samples to ``<target>/<split|data>--<token>--%06d.tar``; shards go into ``written``
    as they are finished. Returns (absolute shard paths, samples, sample type, dtype/shape hints).

    ``open_sink(pattern, maxcount, maxsize)`` opens each split's writer (default: :func:`shard_writer`).
    """
    open_sink = open_sink or shard_writer

    token = uuid.uuid4().hex[:8]
    n_samples = 0
    sample_type: type | None = None
    tracker = HintTracker(object)
    for split, items in splits.items():
        w = open_sink(str(target / f"{split or 'data'}--{token}--%06d.tar"), maxcount, maxsize)
        bar = tqdm(
            items,
            desc=f"writing {name}",
            unit="sample",
            leave=False,
            disable=None if progress is None else not progress,
        )
        done = 0
        try:
            for s in bar:
                if sample_type is None:
                    sample_type = type(s)
                    if typed and not issubclass(sample_type, PackableSample):
                        raise SchemaError(
                            f"write_samples({name!r}): samples are {sample_type.__name__}, not @packable; index "
                            "typed samples, or pass schema_ref= for schema-free ones"
                        )
                    tracker = HintTracker(sample_type)
                elif type(s) is not sample_type:
                    raise SchemaError(
                        f"write_samples({name!r}): sample {n_samples} is a {type(s).__name__}, the first was a "
                        f"{sample_type.__name__}; an entry holds one sample type"
                    )
                w.write(s)
                tracker.update(s)
                n_samples += 1
                if len(w.shards) > done:
                    written.extend(os.path.abspath(p) for p in w.shards[done:])
                    done = len(w.shards)
            w.close()
        except BaseException:
            w.abort()
            raise
        finally:
            bar.close()
        written.extend(os.path.abspath(p) for p in w.shards[done:])
    return list(written), n_samples, sample_type, tracker
