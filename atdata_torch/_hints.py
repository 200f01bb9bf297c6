"""Messages shared by the places that reject a user's input: what was meant and where it belongs."""

from __future__ import annotations

import glob
from collections.abc import Iterable

__all__ = ["local_options_message", "missing_shard_message"]

# Options of iteration (Dataset.ordered / shuffled / loader), not of a shard source.
_ITERATION = {
    "shuffle": "ds.loader(shuffle=True) or ds.shuffled()",
    "seed": "ds.loader(seed=...) or ds.shuffled(seed=...)",
    "batch_size": "ds.loader(batch_size=...) or ds.ordered(batch_size=...)",
    "num_workers": "ds.loader(num_workers=...)",
    "drop_last": "ds.loader(drop_last=True)",
    "last_batch": "ds.loader(last_batch=...)",
    "on_error": "ds.ordered(on_error=...) / ds.shuffled(on_error=...) / ds.loader(on_error=...)",
    "pin_memory": "ds.loader(pin_memory=True)",
    "persistent_workers": "ds.loader(persistent_workers=True)",
}


def local_options_message(options: Iterable[str]) -> str:
    """Why ``options`` were refused for local files, and where the iteration ones go instead.

    Example:
        >>> local_options_message(["shuffle"])  # doctest: +ELLIPSIS
        "options ['shuffle'] do not apply to local files; ...: shuffle -> ds.loader(shuffle=True) or ds.shuffled()"
    """
    names = sorted(options)
    msg = f"options {names} do not apply to local files"
    moves = [f"{n} -> {_ITERATION[n]}" for n in names if n in _ITERATION]
    if moves:
        msg += "; they are options of iterating the dataset, not of opening it: " + ", ".join(moves)
    return msg


def missing_shard_message(shard: str) -> str:
    """The message for a shard path that does not exist (a glob that matched nothing is said to be one).

    Example:
        >>> missing_shard_message("data/train-*.tar")
        "no shard matches the pattern 'data/train-*.tar'; check the directory and the pattern"
    """
    if glob.has_magic(shard):
        return f"no shard matches the pattern {shard!r}; check the directory and the pattern"
    return f"shard {shard!r} does not exist; check the path / brace pattern"
