"""``info`` and ``preview``: what a dataset holds (schema, samples, shards, field types) and its first samples."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ._common import fail, open_dataset, sidecar_schema_ids

__all__ = ["info", "preview"]


def _value_type(v: Any) -> dict[str, Any]:
    """The type of a decoded field value, as ``Dataset.summary()`` words a schema field (no values)."""
    import numpy as np

    if isinstance(v, np.ndarray):
        return {"kind": "ndarray", "dtype": v.dtype.str, "shape": list(v.shape)}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"kind": "bytes"}
    if v is None:
        return {"kind": "none"}
    return {"kind": type(v).__name__}


def _index_fields(sid: str) -> list[dict[str, Any]] | None:
    """Field types of schema id ``sid`` from the local index, when it has a schema with that id (else None).

    Only an index that exists is opened ($ATDATA_TORCH_INDEX or the default file): ``info`` creates nothing.
    """
    import atdata_torch as atd
    from atdata_torch.index import Index, default_index_location

    loc = default_index_location()
    if "://" not in loc and not os.path.exists(loc):
        return None
    name = sid.split("@", 1)[0]
    try:
        with Index(loc) as idx:
            for rec in idx.list_schemas():
                if rec.get("name") != name:
                    continue
                t = idx.get_schema_type(rec["$ref"])
                if atd.schema_id(t) == sid:
                    return [f.describe() for f in getattr(t, "__atdata_fields__", ())]
    except (atd.AtdataError, KeyError, TypeError, ValueError):
        return None
    return None


def _describe(target: str, ds: Any) -> dict[str, Any]:
    """``ds.summary()`` completed from the sidecars (schema id) and the data (samples, field types)."""
    d: dict[str, Any] = ds.summary()
    shards = ds.list_shards()
    sides, ids = sidecar_schema_ids(ds, shards)
    d["dataset"] = target
    d["sidecars"] = f"{sum(sd is not None for sd in sides)}/{len(shards)}"
    d["schema_ids"] = ids
    if d["schema_id"] is None and len(ids) == 1:
        d["schema_id"] = ids[0]
        d["schema_id_from"] = "index sidecars"
    elif d["schema_id"] is not None:
        d["schema_id_from"] = "schema"
    if d["samples"] is None:
        d["samples"] = len(ds)
    d["fields_from"] = "schema"
    if d["fields"] is None and d["schema_id"] is not None:
        fields = _index_fields(d["schema_id"])
        if fields is not None:
            d["fields"], d["fields_from"] = fields, "index schema"
    if d["fields"] is None:
        first = ds.head(1)
        d["fields"] = [{"name": k, **_value_type(v)} for k, v in first[0].items()] if first else []
        d["fields_from"] = "first sample"
    return d


def _field_line(f: dict[str, Any]) -> str:
    kind = str(f.get("kind", "?"))
    if f.get("items"):
        kind += f"[{f['items'].get('kind', '?')}]"
    if f.get("dtype"):
        kind += f" {f['dtype']}"
    if f.get("shape") is not None:
        kind += f" {tuple(f['shape'])}"
    if f.get("optional"):
        kind += " | None"
    return f"  {f['name']}: {kind}"


def _type_line(d: dict[str, Any]) -> str:
    sid = d.get("schema_id")
    where = f", from the {d['schema_id_from']}" if d.get("schema_id_from") == "index sidecars" else ""
    shown = sid.split("@", 1)[0] if sid and d["sample_type"] == "DictSample" else d["sample_type"]
    read_as = " (read as DictSample)" if shown != d["sample_type"] else ""
    extra = f"; shards disagree: {d['schema_ids']}" if len(d.get("schema_ids") or []) > 1 else ""
    return f"{shown}{read_as}  (schema id {sid or 'unknown'}{where}{extra})"


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.ndarray):
        return {"ndarray": {"dtype": v.dtype.str, "shape": list(v.shape)}}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"bytes": len(v)}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.generic,)):
        return v.item()
    return v


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(target: str, as_json: bool) -> None:
    """Describe a dataset: schema, samples, shards, bytes, sidecar presence.

    TARGET is a shard URL / brace pattern / glob, an index name (NAME, @local/NAME[@VERSION]), or a published
    dataset (at://DID/science.alt.dataset.entry/RKEY, @HANDLE/NAME[@VERSION]; the PDS and PLC come from
    ATDATA_PDS_URL / ATDATA_PLC_URL when not the public network).
    """
    import atdata_torch as atd

    ds = open_dataset(target)
    try:
        d = _describe(target, ds)
    except atd.AtdataError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    click.echo(f"dataset     {target}")
    click.echo(f"sample type {_type_line(d)}")
    click.echo(f"samples     {d['samples']}")
    click.echo(f"shards      {d['shards']}  (index sidecars: {d['sidecars']})")
    if d["bytes"] is not None:
        click.echo(f"bytes       {d['bytes']:,}")
    click.echo(f"fields ({d['fields_from']}):")
    for f in d["fields"]:
        click.echo(_field_line(f))


@click.command()
@click.argument("target")
@click.option("--limit", "-n", default=5, show_default=True, help="How many samples.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def preview(target: str, limit: int, as_json: bool) -> None:
    """Print the first samples of a dataset (after a line with its sample type and schema id; --json: one JSON
    object per sample, arrays as dtype and shape)."""
    import atdata_torch as atd

    ds = open_dataset(target)
    try:
        samples = ds.head(limit)
        if not as_json:
            d = ds.summary()
            d["schema_ids"] = sidecar_schema_ids(ds, ds.list_shards()[:1])[1]
            if d["schema_id"] is None and d["schema_ids"]:
                d["schema_id"], d["schema_id_from"] = d["schema_ids"][0], "index sidecars"
            click.echo(f"# {target}: {_type_line(d)}")
    except atd.AtdataError as exc:
        fail(str(exc))
    for s in samples:
        if as_json:
            data = s.to_dict() if hasattr(s, "to_dict") else dict(s)
            click.echo(json.dumps(_jsonable(data), default=str))
        else:
            click.echo(repr(s))
