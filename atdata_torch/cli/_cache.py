"""``cache ls`` and ``cache clear``: the local shard cache of remote datasets."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ._common import fail

__all__ = ["cache_group"]


@click.group("cache")
def cache_group() -> None:
    """The local shard cache of remote datasets."""


def _cache_dir(path: str | None) -> str:
    d = path or os.environ.get("ATDATA_TORCH_CACHE_DIR")
    if not d:
        fail("no cache directory: pass --dir or set ATDATA_TORCH_CACHE_DIR")
    return str(d)


@cache_group.command("ls")
@click.option("--dir", "cache_dir", default=None, help="Cache directory (default: $ATDATA_TORCH_CACHE_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_ls(cache_dir: str | None, as_json: bool) -> None:
    """List cached shards and their sizes."""
    from atdata_torch.cache import ShardCache

    cache = ShardCache(_cache_dir(cache_dir))
    rows: list[dict[str, Any]] = [{"file": p.name, "bytes": p.stat().st_size} for p in sorted(cache.entries())]
    if as_json:
        click.echo(json.dumps({"entries": rows, "bytes": sum(r["bytes"] for r in rows)}, indent=2))
        return
    for r in rows:
        click.echo(f"{r['file']}  {r['bytes']:,} bytes")
    click.echo(f"{len(rows)} cached shard(s), {sum(r['bytes'] for r in rows):,} bytes")


@cache_group.command("clear")
@click.option("--dir", "cache_dir", default=None, help="Cache directory (default: $ATDATA_TORCH_CACHE_DIR).")
def cache_clear(cache_dir: str | None) -> None:
    """Delete every cached shard (only files the cache wrote)."""
    from atdata_torch.cache import ShardCache

    cache = ShardCache(_cache_dir(cache_dir))
    n = cache.clear()
    click.echo(f"removed {n} cached shard(s)")
