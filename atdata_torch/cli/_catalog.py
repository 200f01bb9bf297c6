"""``datasets``, ``ls``, ``schema show``, ``login`` and ``publish``: the local index and AT Protocol repos."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from .._shards import expand_urls
from ._common import anonymous_atmosphere, fail, open_index, print_rows

__all__ = ["datasets", "login", "ls", "publish", "schema_group"]


@click.command("datasets")
@click.option("--index", "index_url", default=None, help="Index location (default: the local SQLite index).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datasets(index_url: str | None, as_json: bool) -> None:
    """List the datasets of the index."""
    _list_datasets(index_url, as_json)


@click.command("ls")
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


def _list_published(repo: str, as_json: bool) -> None:
    import atdata_torch as atd

    body = repo[5:] if repo.startswith("at://") else repo.lstrip("@")
    handle, _, name = body.partition("/")
    atmo = anonymous_atmosphere()
    try:
        entries = atmo.list_datasets(handle)
        labels = atmo.list_labels(handle)
    except atd.AtdataError as exc:
        fail(str(exc))
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
    print_rows(
        rows,
        as_json,
        lambda r: (
            f"{r['name']:<24} {r['storage']:<6} {r['shards']} shard(s)  versions "
            f"{','.join(r['versions']) or '-'}  {r['uri']}"
        ),
    )


@click.command()
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
        fail(str(exc))


@click.command()
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

    idx = open_index(index_url)
    try:
        from atdata_torch.atmosphere import Atmosphere

        with Atmosphere.from_session(session_file) as atmo:
            uri = idx.promote(name, to=atmo, name=publish_name, storage=storage, progress=progress)
    except atd.AtdataError as exc:
        fail(str(exc))
    finally:
        idx.close()
    click.echo(uri)


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

    idx = open_index(index_url)
    try:
        entries = list(idx.list_datasets())
        labels = idx.list_labels()
    except atd.AtdataError as exc:
        fail(str(exc))
    finally:
        idx.close()
    rows = [_dataset_row(e, labels) for e in entries]
    if as_json or not rows:
        print_rows(rows, as_json, str)
        return
    _print_table(rows)


def _dataset_row(e: Any, labels: list[Any]) -> dict[str, Any]:
    """One index entry as a row of ``datasets --json``: its versions, labels, size, location and schema."""
    size = (e.metadata or {}).get("size") or {}
    names = [lb for lb in labels if lb.cid == e.cid]
    return {
        "name": e.name,
        "versions": [lb.version for lb in names if lb.name == e.name and lb.version],
        "labels": [lb.name + (f"@{lb.version}" if lb.version else "") for lb in names],
        "samples": size.get("samples"),
        "shards": size.get("shards") or sum(len(expand_urls(u)) for u in e.data_urls),  # a brace pattern: its shards
        "location": _location(list(e.data_urls)),
        "created": e.created_at,
        "cid": e.cid,
        "schema": e.schema_ref,
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as aligned columns: name, version, samples, shards, created, location."""
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


@click.group("schema")
def schema_group() -> None:
    """Schemas in the index."""


@schema_group.command("show")
@click.argument("name")
@click.option("--index", "index_url", default=None, help="Index location (default: the local SQLite index).")
def schema_show(name: str, index_url: str | None) -> None:
    """Print the schema JSON of a dataset name or a schema reference."""
    import atdata_torch as atd

    idx = open_index(index_url)
    try:
        ref = name if name.startswith("atdata://") else idx.get_dataset(name.removeprefix("@local/")).schema_ref
        click.echo(json.dumps(idx.get_schema(ref), indent=2, default=str))
    except (atd.AtdataError, KeyError, LookupError) as exc:
        fail(str(exc))
