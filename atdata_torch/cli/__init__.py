"""The ``atdata-torch`` command line: look inside shards, verify them, index, convert, and manage the cache.

Every command has ``--help``. Exit codes: 0 success, 1 failure (a verification that found bad samples, a missing
shard, a corrupt file), 2 usage error. ``--json`` prints machine-readable output.

Example:
    >>> from click.testing import CliRunner
    >>> CliRunner().invoke(main, ["--help"]).exit_code
    0
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click
import numpy as np

__all__ = ["main"]


def _fail(message: str) -> None:
    # Library messages suggest Python calls; at the command line, name the command that does the same.
    message = message.replace("index.list_datasets()", "`atdata-torch datasets`")
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _value_type(v: Any) -> dict[str, Any]:
    """The type of a decoded field value, as ``Dataset.describe()`` words a schema field (no values)."""
    if isinstance(v, np.ndarray):
        return {"kind": "ndarray", "dtype": v.dtype.str, "shape": list(v.shape)}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"kind": "bytes"}
    if v is None:
        return {"kind": "none"}
    return {"kind": type(v).__name__}


def _sidecar_schema_ids(ds: Any, shards: list[str]) -> tuple[list[Any], list[str]]:
    """The shards' index sidecars (``None`` where absent) and the distinct schema ids they record."""
    sides = [ds._sidecar(s) for s in shards]
    ids = sorted({sd.schema_id for sd in sides if sd is not None and sd.schema_id})
    return sides, ids


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
    """``ds.describe()`` completed from the sidecars (schema id) and the data (samples, field types)."""
    d: dict[str, Any] = ds.describe()
    shards = ds.list_shards()
    sides, ids = _sidecar_schema_ids(ds, shards)
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


def _is_atproto(target: str) -> bool:
    from atdata_torch.load import _is_atproto_name

    return _is_atproto_name(target)


def _is_name(target: str) -> bool:
    return target.startswith("@") or (
        "/" not in target and "://" not in target and not target.endswith(".tar") and not os.path.exists(target)
    )


def _open(target: str) -> Any:
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
        _fail(str(exc))
    except FileNotFoundError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="atdata-torch", prog_name="atdata-torch")
def main() -> None:
    """Inspect, verify, index and convert atdata_torch / WebDataset shards."""


@main.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(target: str, as_json: bool) -> None:
    """Describe a dataset: schema, samples, shards, bytes, sidecar presence.

    TARGET is a shard URL / brace pattern / glob, an index name (NAME, @local/NAME[@VERSION]), or a published
    dataset (at://DID/science.alt.dataset.entry/RKEY, @HANDLE/NAME[@VERSION]; the PDS and PLC come from
    ATDATA_PDS_URL / ATDATA_PLC_URL when not the public network).
    """
    import atdata_torch as atd

    ds = _open(target)
    try:
        d = _describe(target, ds)
    except atd.AtdataError as exc:
        _fail(str(exc))
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


@main.command()
@click.argument("target")
@click.option("--limit", "-n", default=5, show_default=True, help="How many samples.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def preview(target: str, limit: int, as_json: bool) -> None:
    """Print the first samples of a dataset (after a line with its sample type and schema id; --json: one JSON
    object per sample, arrays as dtype and shape)."""
    import atdata_torch as atd

    ds = _open(target)
    try:
        samples = ds.head(limit)
        if not as_json:
            d = ds.describe()
            d["schema_ids"] = _sidecar_schema_ids(ds, ds.list_shards()[:1])[1]
            if d["schema_id"] is None and d["schema_ids"]:
                d["schema_id"], d["schema_id_from"] = d["schema_ids"][0], "index sidecars"
            click.echo(f"# {target}: {_type_line(d)}")
    except atd.AtdataError as exc:
        _fail(str(exc))
    for s in samples:
        if as_json:
            data = s.to_dict() if hasattr(s, "to_dict") else dict(s)
            click.echo(json.dumps(_jsonable(data), default=str))
        else:
            click.echo(repr(s))


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


@main.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def verify(target: str, as_json: bool, progress: bool | None) -> None:
    """Check every shard (checksums against the sidecars) and decode every sample.

    Exits with 1 and lists bad samples by shard and key when anything is wrong.
    """
    from tqdm.auto import tqdm

    import atdata_torch as atd

    ds = _open(target)
    problems: list[dict[str, Any]] = []
    shards = ds.list_shards()
    try:
        schema_ids = _sidecar_schema_ids(ds, shards)[1]
    except atd.AtdataError:
        schema_ids = []  # an unreadable sidecar is reported shard by shard below
    typed = ds.describe()["schema_id"]
    for shard in tqdm(shards, desc="verifying", unit="shard", disable=None if progress is None else not progress):
        problems.extend(_verify_shard(ds, shard))
    if as_json:
        report = {
            "shards": len(shards),
            "sample_type": ds.describe()["sample_type"],
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


@main.group("index")
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
        _fail(str(exc))
    rows: list[dict[str, Any]] = [
        {"shard": s, "samples": i.count, "sha256": i.sha256} for s, i in zip(shards, idxs, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['shard']}: {r['samples']} samples, sha256 {r['sha256'][:16]}...")


@main.command()
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

    ds = _open(src)
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
        _fail(str(exc))
    click.echo(f"wrote {w.count} samples to {len(w.shards)} shard(s)")


@main.command("datasets")
@click.option("--index", "index_url", default=None, help="Index location (default: the local SQLite index).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datasets(index_url: str | None, as_json: bool) -> None:
    """List the datasets of the index."""
    _list_datasets(index_url, as_json)


@main.command("ls")
@click.argument("repo", required=False)
@click.option("--index", "index_url", default=None, help="Index location (default: the local SQLite index).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(repo: str | None, index_url: str | None, as_json: bool) -> None:
    """List the datasets of the local index, or of an AT Protocol repo.

    REPO is @HANDLE, a DID, at://DID, or @HANDLE/NAME (that dataset's versions).
    """
    if repo is None:
        _list_datasets(index_url, as_json)
        return
    _list_published(repo, as_json)


def _atmosphere() -> Any:
    import atdata_torch as atd

    try:
        from atdata_torch.atmosphere import Atmosphere

        return Atmosphere.anonymous()
    except atd.AtdataError as exc:
        _fail(str(exc))


def _list_published(repo: str, as_json: bool) -> None:
    import atdata_torch as atd

    body = repo[5:] if repo.startswith("at://") else repo.lstrip("@")
    handle, _, name = body.partition("/")
    atmo = _atmosphere()
    try:
        entries = atmo.list_datasets(handle)
        labels = atmo.list_labels(handle)
    except atd.AtdataError as exc:
        _fail(str(exc))
    finally:
        atmo.close()
    versions: dict[str, list[str]] = {}
    for lb in sorted(labels, key=lambda lb: lb.created_at or ""):
        versions.setdefault(lb.dataset_uri, []).append(lb.version or "(latest)")
    rows = [
        {
            "name": e.name,
            "uri": e.uri,
            "storage": e.storage,
            "shards": len(e.shards),
            "samples": e.size.get("samples"),
            "versions": versions.get(e.uri, []),
            "created": e.created_at,
        }
        for e in entries
        if not name or e.name == name
    ]
    _print_rows(
        rows,
        as_json,
        lambda r: (
            f"{r['name']:<24} {r['storage']:<6} {r['shards']} shard(s)  versions "
            f"{','.join(r['versions']) or '-'}  {r['uri']}"
        ),
    )


@main.command()
@click.argument("handle")
@click.option("--pds", default=None, help="A PDS to resolve the handle on (default: $ATDATA_PDS_URL, then DNS).")
@click.option("--plc", default=None, help="The PLC directory (default: $ATDATA_PLC_URL, else plc.directory).")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from stdin (else $ATDATA_PASSWORD or a prompt)."
)
@click.option("--session", "session_file", default=None, help="Session file (default: ~/.config/atdata-torch/...).")
def login(handle: str, pds: str | None, plc: str | None, password_stdin: bool, session_file: str | None) -> None:
    """Log in to an AT Protocol account and save the session (owner-only file) for `publish`."""
    import atdata_torch as atd

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("ATDATA_PASSWORD") or click.prompt("password", hide_input=True)
    try:
        from atdata_torch.atmosphere import Atmosphere, default_session_path

        path = session_file or str(default_session_path())
        with Atmosphere.login(handle, password, pds=pds, plc=plc, session_file=path) as atmo:
            click.echo(f"logged in as {atmo.handle} ({atmo.did}) on {atmo.pds}; session saved to {path}")
    except atd.AtdataError as exc:
        _fail(str(exc))


@main.command()
@click.argument("name")
@click.option("--index", "index_url", default=None, help="Index location (default: the local SQLite index).")
@click.option(
    "--storage",
    type=click.Choice(["blobs", "http", "s3"]),
    default=None,
    help="Where the shards live (default: blobs for local shards, else their URLs).",
)
@click.option("--as", "publish_name", default=None, help="Publish under this name (default: NAME).")
@click.option("--session", "session_file", default=None, help="Session file from `atdata-torch login`.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def publish(
    name: str,
    index_url: str | None,
    storage: str | None,
    publish_name: str | None,
    session_file: str | None,
    progress: bool | None,
) -> None:
    """Publish a dataset of the local index (NAME[@VERSION]) to your AT Protocol repo; prints its at:// URI.

    Uses the session saved by `atdata-torch login`. Local shards are uploaded as blobs with their checksums.
    """
    import atdata_torch as atd

    idx = _index(index_url)
    try:
        from atdata_torch.atmosphere import Atmosphere

        with Atmosphere.from_session(session_file) as atmo:
            uri = idx.promote(name, to=atmo, name=publish_name, storage=storage, progress=progress)
    except atd.AtdataError as exc:
        _fail(str(exc))
    finally:
        idx.close()
    click.echo(uri)


def _index(index_url: str | None) -> Any:
    import atdata_torch as atd

    try:
        from atdata_torch.index import Index

        return Index(index_url) if index_url else Index()
    except atd.AtdataError as exc:
        _fail(str(exc))


def _location(urls: list[str]) -> str:
    """The directory (or URL prefix) that holds every shard."""
    if not urls:
        return "-"
    if all("://" not in u for u in urls):
        return os.path.commonpath([os.path.dirname(u) or "." for u in urls])
    prefix = os.path.commonprefix(urls)  # noqa: RUF071 (URLs: characters, cut at the last "/" below)
    return prefix[: prefix.rfind("/") + 1] or prefix


def _list_datasets(index_url: str | None, as_json: bool) -> None:
    import atdata_torch as atd

    idx = _index(index_url)
    try:
        entries = list(idx.list_datasets())
        labels = idx.list_labels()
    except atd.AtdataError as exc:
        _fail(str(exc))
    finally:
        idx.close()
    rows = []
    for e in entries:
        size = (e.metadata or {}).get("size") or {}
        names = [lb for lb in labels if lb.cid == e.cid]
        rows.append(
            {
                "name": e.name,
                "versions": [lb.version for lb in names if lb.name == e.name and lb.version],
                "labels": [lb.name + (f"@{lb.version}" if lb.version else "") for lb in names],
                "samples": size.get("samples"),
                "shards": len(e.data_urls),
                "location": _location(list(e.data_urls)),
                "created": e.created_at,
                "cid": e.cid,
                "schema": e.schema_ref,
            }
        )
    if as_json or not rows:
        _print_rows(rows, as_json, str)
        return
    header = {"name": "NAME", "version": "VERSION", "samples": "SAMPLES", "shards": "SHARDS", "created": "CREATED"}
    table = [header] + [
        {
            "name": r["name"],
            "version": ",".join(r["versions"]) or "-",
            "samples": "?" if r["samples"] is None else str(r["samples"]),
            "shards": str(r["shards"]),
            "created": (r["created"] or "-")[:19],
            "location": r["location"],
        }
        for r in rows
    ]
    header["location"] = "LOCATION"
    w = {k: max(len(t[k]) for t in table) for k in ("name", "version", "samples", "shards", "created")}
    for t in table:
        click.echo(
            f"{t['name']:<{w['name']}}  {t['version']:<{w['version']}}  {t['samples']:>{w['samples']}}  "
            f"{t['shards']:>{w['shards']}}  {t['created']:<{w['created']}}  {t['location']}"
        )


def _print_rows(rows: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("(no datasets)")
    for r in rows:
        click.echo(line(r))


@main.group("schema")
def schema_group() -> None:
    """Schemas in the index."""


@schema_group.command("show")
@click.argument("name")
@click.option("--index", "index_url", default=None, help="Index location (default: the local SQLite index).")
def schema_show(name: str, index_url: str | None) -> None:
    """Print the schema JSON of a dataset name or a schema reference."""
    import atdata_torch as atd

    idx = _index(index_url)
    try:
        ref = name if name.startswith("atdata://") else idx.get_dataset(name.removeprefix("@local/")).schema_ref
        click.echo(json.dumps(idx.get_schema(ref), indent=2, default=str))
    except (atd.AtdataError, KeyError, LookupError) as exc:
        _fail(str(exc))


@main.group("cache")
def cache_group() -> None:
    """The local shard cache of remote datasets."""


def _cache_dir(path: str | None) -> str:
    d = path or os.environ.get("ATDATA_TORCH_CACHE_DIR")
    if not d:
        _fail("no cache directory: pass --dir or set ATDATA_TORCH_CACHE_DIR")
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


if __name__ == "__main__":
    main()
