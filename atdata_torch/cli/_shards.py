"""``verify``, ``index build`` and ``convert``: check shards against their sidecars, write sidecars, rewrite shards."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from ._common import fail, open_dataset, sidecar_schema_ids

__all__ = ["convert", "index_group", "verify"]


def _verify_shard(ds: Any, shard: str) -> Iterator[dict[str, Any]]:
    import hashlib

    import atdata_torch as atd
    from atdata_torch._pipeline import decode_record
    from atdata_torch._reader import iter_records

    try:
        buf = ds._buffer(shard)
    except atd.AtdataError as exc:
        yield {"shard": shard, "key": None, "error": str(exc)}
        return
    side = ds._sidecar(shard)
    if side is not None:
        if side.size != len(buf):
            yield {"shard": shard, "key": None, "error": f"sidecar describes {side.size} bytes, shard has {len(buf)}"}
        elif side.sha256 and hashlib.sha256(buf).hexdigest() != side.sha256:
            yield {"shard": shard, "key": None, "error": "sha256 does not match the index sidecar"}
    records = iter_records(buf, shard)
    count = 0
    while True:
        try:
            rec = next(records)
        except StopIteration:
            break
        except atd.AtdataError as exc:
            yield {"shard": shard, "key": exc.key, "error": str(exc)}
            return
        count += 1
        try:
            decode_record(rec, ds._decode_type)
        except atd.AtdataError as exc:
            yield {"shard": shard, "key": rec.key, "error": str(exc)}
    if side is not None and side.count != count:
        yield {"shard": shard, "key": None, "error": f"sidecar says {side.count} samples, shard holds {count}"}


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def verify(target: str, as_json: bool, progress: bool | None) -> None:
    """Check every shard (checksums against the sidecars) and decode every sample.

    Exits with 1 and lists bad samples by shard and key when anything is wrong.
    """
    from tqdm.auto import tqdm

    import atdata_torch as atd

    ds = open_dataset(target)
    problems: list[dict[str, Any]] = []
    shards = ds.list_shards()
    try:
        schema_ids = sidecar_schema_ids(ds, shards)[1]
    except atd.AtdataError:
        schema_ids = []  # an unreadable sidecar is reported shard by shard below
    typed = ds.summary()["schema_id"]
    for shard in tqdm(shards, desc="verifying", unit="shard", disable=None if progress is None else not progress):
        problems.extend(_verify_shard(ds, shard))
    if as_json:
        report = {
            "shards": len(shards),
            "sample_type": ds.summary()["sample_type"],
            "schema_id": typed or (schema_ids[0] if len(schema_ids) == 1 else None),
            "schema_ids": schema_ids,
            "ok": not problems,
            "problems": problems,
        }
        click.echo(json.dumps(report, indent=2))
    else:
        for p in problems:
            where = p["shard"] + (f" key={p['key']}" if p["key"] else "")
            click.echo(f"BAD  {where}: {p['error']}")
        ids = ", ".join(schema_ids) or (typed or "unknown")
        click.echo(f"{len(shards)} shard(s) checked (schema id {ids}), {len(problems)} problem(s)")
    if problems:
        sys.exit(1)


@click.group("index")
def index_group() -> None:
    """Shard index sidecars."""


@index_group.command("build")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def index_build(target: str, as_json: bool, progress: bool | None) -> None:
    """Write <shard>.idx.json sidecars for existing local shards (one scan each)."""
    import atdata_torch as atd

    try:
        idxs = atd.build_index(target, progress=progress)
        shards = atd.Dataset(target).list_shards()
    except (atd.AtdataError, TypeError) as exc:
        fail(str(exc))
    rows: list[dict[str, Any]] = [
        {"shard": s, "samples": i.count, "sha256": i.sha256} for s, i in zip(shards, idxs, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['shard']}: {r['samples']} samples, sha256 {r['sha256'][:16]}...")


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--maxcount", type=int, default=None, help="Samples per output shard.")
@click.option("--maxsize", type=int, default=None, help="Bytes per output shard.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def convert(src: str, dst: str, maxcount: int | None, maxsize: int | None, progress: bool | None) -> None:
    """Convert plain webdataset tars or original atdata shards (SRC) into sidecar-indexed atdata_torch shards.

    DST is an output path like out/train.tar (with --maxcount/--maxsize: out/train-000000.tar, ...). Sample keys
    are kept.
    """
    from tqdm.auto import tqdm

    import atdata_torch as atd

    ds = open_dataset(src)
    if maxcount is None and maxsize is None:
        maxcount = 10_000
    try:
        total = len(ds)
        with atd.ShardWriter(dst, maxcount=maxcount, maxsize=maxsize) as w:
            bar = tqdm(
                total=total, desc="converting", unit="sample", disable=None if progress is None else not progress
            )
            for batch in ds.ordered(batch_size=256):
                for key, sample in zip(batch.keys or [], batch.samples, strict=True):
                    w.write(sample, key=key)
                bar.update(len(batch))
            bar.close()
    except atd.AtdataError as exc:
        fail(str(exc))
    click.echo(f"wrote {w.count} samples to {len(w.shards)} shard(s)")
