"""What the commands share: failing with a message, opening a dataset, an index or the network, printing rows."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = ["anonymous_atmosphere", "fail", "open_dataset", "open_index", "print_rows", "sidecar_schema_ids"]


def fail(message: str) -> None:
    # Library messages suggest Python calls; at the command line, name the command that does the same.
    message = message.replace("index.list_datasets()", "`atdata-torch datasets`")
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def sidecar_schema_ids(ds: Any, shards: list[str]) -> tuple[list[Any], list[str]]:
    """The shards' index sidecars (``None`` where absent) and the distinct schema ids they record."""
    sides = [ds._sidecar(s) for s in shards]
    ids = sorted({sd.schema_id for sd in sides if sd is not None and sd.schema_id})
    return sides, ids


def _is_atproto(target: str) -> bool:
    from atdata_torch.load import _is_atproto_name

    return _is_atproto_name(target)


def _is_name(target: str) -> bool:
    return target.startswith("@") or (
        "/" not in target and "://" not in target and not target.endswith(".tar") and not os.path.exists(target)
    )


def open_dataset(target: str) -> Any:
    """A Dataset for a URL/path (DictSample) or an index name (typed by its schema)."""
    import atdata_torch as atd

    try:
        if _is_atproto(target):
            splits = atd.load_dataset(target)
            return splits["train"] if "train" in splits else next(iter(splits.values()))
        if _is_name(target):
            name = target if target.startswith("@") else f"@local/{target}"
            return atd.load_dataset(name, split="train")
        return atd.Dataset(target)
    except atd.AtdataError as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def open_index(index_url: str | None) -> Any:
    import atdata_torch as atd

    try:
        from atdata_torch.index import Index

        return Index(index_url) if index_url else Index()
    except atd.AtdataError as exc:
        fail(str(exc))


def anonymous_atmosphere() -> Any:
    import atdata_torch as atd

    try:
        from atdata_torch.atmosphere import Atmosphere

        return Atmosphere.anonymous()
    except atd.AtdataError as exc:
        fail(str(exc))


def print_rows(rows: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("(no datasets)")
    for r in rows:
        click.echo(line(r))
