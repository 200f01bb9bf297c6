"""The atdata-torch command line, run as real subprocesses (the console script), including failure cases.

All invocations start together in a thread pool (each pays the torch import), then each test checks one result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webdataset as wds

import atdata_torch as atd


@atd.packable
class CliRec:
    x: atd.NDArray
    label: int
    name: str


def _exe() -> list[str]:
    script = shutil.which("atdata-torch", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "atdata_torch.cli"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cli")
    good = atd.write_samples(
        [CliRec(x=np.full(3, i, np.float32), label=i, name=f"n{i}") for i in range(12)],
        str(root / "good.tar"),
        maxcount=5,
        progress=False,
    )
    good_pat = str(root / "good-{000000..000002}.tar")
    # A corrupt copy: flip a payload byte of sample 3 of shard 0 so that its array header is broken.
    bad_dir = root / "bad"
    bad_dir.mkdir()
    for s in good.list_shards():
        shutil.copy(s, bad_dir / os.path.basename(s))
        shutil.copy(s + ".idx.json", bad_dir / (os.path.basename(s) + ".idx.json"))
    bad0 = bad_dir / "good-000000.tar"
    raw = bytearray(bad0.read_bytes())
    with tarfile.open(bad0) as tf:
        m = tf.getmembers()[3]
        raw[m.offset_data : m.offset_data + m.size] = b"\xc1" * m.size  # 0xc1 is never valid msgpack
    bad0.write_bytes(bytes(raw))
    bad_pat = str(bad_dir / "good-{000000..000002}.tar")
    # A plain webdataset tar to convert and index.
    plain = root / "plain.tar"
    with wds.TarWriter(str(plain)) as sink:
        for i in range(7):
            sink.write({"__key__": f"s{i:03d}", "cls": i, "json": {"i": i}, "txt": f"t{i}"})
    cache = root / "cache"
    (cache).mkdir()
    # A separate index (passed with --index) holding two versions of one dataset.
    named = str(root / "named.db")
    with atd.Index(named, data_dir=str(root / "named-store")) as index:
        recs = [CliRec(x=np.full(3, i, np.float32), label=i, name=f"n{i}") for i in range(6)]
        index.write_samples(recs, name="digits", version="1.0.0", maxcount=4, progress=False)
        index.write_samples(recs[:2], name="digits", version="2.0.0", progress=False)
    cmds: dict[str, list[str]] = {
        "help": ["--help"],
        "info": ["info", good_pat],
        "info_json": ["info", good_pat, "--json"],
        "info_missing": ["info", str(root / "nope-{000000..000001}.tar")],
        "preview": ["preview", good_pat, "--limit", "2", "--json"],
        "verify_ok": ["verify", good_pat, "--json", "--no-progress"],
        "verify_bad": ["verify", bad_pat, "--no-progress"],
        "index_build": ["index", "build", str(plain), "--json", "--no-progress"],
        "convert": ["convert", str(plain), str(root / "conv" / "c.tar"), "--maxcount", "3", "--no-progress"],
        "cache_ls": ["cache", "ls", "--dir", str(cache), "--json"],
        "cache_clear": ["cache", "clear", "--dir", str(cache)],
        "bad_usage": ["verify"],
        "info_glob_nomatch": ["info", str(root / "nothing-*.tar")],
        "preview_text": ["preview", good_pat, "--limit", "1"],
        "datasets": ["datasets", "--index", named],
        "datasets_json": ["datasets", "--index", named, "--json"],
        "schema_missing": ["schema", "show", "nope", "--index", named],
    }
    env = {**os.environ, "ATDATA_TORCH_INDEX": str(root / "index.db"), "ATDATA_TORCH_DATA_DIR": str(root / "store")}

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_exe(), *args], capture_output=True, text=True, timeout=180, env=env)

    with ThreadPoolExecutor(4) as pool:
        futures = {k: pool.submit(run, v) for k, v in cmds.items()}
        results = {k: f.result() for k, f in futures.items()}
    return {"root": root, "results": results}


def test_help_lists_every_command(runs: dict[str, Any]) -> None:
    r = runs["results"]["help"]
    assert r.returncode == 0
    for cmd in ("info", "preview", "verify", "index", "convert", "datasets", "ls", "schema", "cache"):
        assert cmd in r.stdout


@pytest.mark.parametrize("args", [["--help"], ["info", "--help"]], ids=["help", "info-help"])
def test_help_imports_neither_torch_nor_numpy(args: list[str]) -> None:
    # PYTHONPROFILEIMPORTTIME (python -X importtime) lists every module the process imported, on stderr.
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    r = subprocess.run([*_exe(), *args], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "atdata_torch.cli" in imported  # the profile covers the command line
    heavy = ("torch", "torchdata", "numpy", "webdataset", "msgpack", "atdata_torch.dataset", "atdata_torch.index")
    found = sorted(m for m in imported if any(m == h or m.startswith(h + ".") for h in heavy))
    assert found == [], f"`atdata-torch {' '.join(args)}` imported {found[:20]}"


def test_info(runs: dict[str, Any]) -> None:
    r = runs["results"]["info"]
    assert r.returncode == 0, r.stderr
    assert "samples     12" in r.stdout
    assert "index sidecars: 3/3" in r.stdout
    d = json.loads(runs["results"]["info_json"].stdout)
    assert d["samples"] == 12 and d["shards"] == 3
    assert [f["name"] for f in d["fields"]] == ["x", "label", "name"]


def test_info_reads_the_schema_id_from_the_sidecars_and_shows_field_types(runs: dict[str, Any]) -> None:
    sid = atd.schema_id(CliRec)
    r = runs["results"]["info"]
    assert f"sample type CliRec (read as DictSample)  (schema id {sid}, from the index sidecars)" in r.stdout
    assert "fields (first sample):\n  x: ndarray <f4 (3,)\n  label: int\n  name: str\n" in r.stdout
    assert '"value"' not in r.stdout and "n0" not in r.stdout  # types, not the first sample's values
    d = json.loads(runs["results"]["info_json"].stdout)
    assert d["schema_id"] == sid and d["schema_ids"] == [sid] and d["schema_id_from"] == "index sidecars"
    assert d["fields"][0] == {"name": "x", "kind": "ndarray", "dtype": "<f4", "shape": [3]}
    assert json.loads(runs["results"]["verify_ok"].stdout)["schema_id"] == sid
    first_line = runs["results"]["preview_text"].stdout.splitlines()[0]
    assert first_line.endswith(f"(schema id {sid}, from the index sidecars)")


def test_a_glob_that_matches_nothing_is_named_as_a_pattern(runs: dict[str, Any]) -> None:
    r = runs["results"]["info_glob_nomatch"]
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no shard matches the pattern" in r.stderr and "nothing-*.tar" in r.stderr


def test_datasets_lists_name_version_samples_shards_location_created(runs: dict[str, Any]) -> None:
    r = runs["results"]["datasets"]
    assert r.returncode == 0, r.stderr
    header, *lines = r.stdout.splitlines()
    assert header.split() == ["NAME", "VERSION", "SAMPLES", "SHARDS", "CREATED", "LOCATION"]
    assert [ln.split()[:4] for ln in lines] == [["digits", "2.0.0", "2", "1"], ["digits", "1.0.0", "6", "2"]]
    assert all(ln.rstrip().endswith(os.path.join("named-store", "digits")) for ln in lines)
    rows = json.loads(runs["results"]["datasets_json"].stdout)
    assert [(x["name"], x["versions"], x["samples"], x["shards"]) for x in rows] == [
        ("digits", ["2.0.0"], 2, 1),
        ("digits", ["1.0.0"], 6, 2),
    ]
    assert all(x["created"] and x["location"].endswith("digits") for x in rows)


def test_schema_show_of_an_unknown_name_suggests_the_cli_command(runs: dict[str, Any]) -> None:
    r = runs["results"]["schema_missing"]
    assert r.returncode == 1
    assert "`atdata-torch datasets`" in r.stderr and "index.list_datasets()" not in r.stderr


def test_info_on_missing_shards_fails_cleanly(runs: dict[str, Any]) -> None:
    r = runs["results"]["info_missing"]
    assert r.returncode == 1
    assert r.stderr.startswith("error: ")
    assert "nope-000000.tar" in r.stderr
    assert "Traceback" not in r.stderr


def test_preview_json(runs: dict[str, Any]) -> None:
    r = runs["results"]["preview"]
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["label"] for x in lines] == [0, 1]
    assert lines[0]["x"] == {"ndarray": {"dtype": "<f4", "shape": [3]}}


def test_verify_ok(runs: dict[str, Any]) -> None:
    r = runs["results"]["verify_ok"]
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {k: report[k] for k in ("shards", "ok", "problems")} == {"shards": 3, "ok": True, "problems": []}


def test_verify_reports_bad_sample_by_shard_and_key(runs: dict[str, Any]) -> None:
    r = runs["results"]["verify_bad"]
    assert r.returncode == 1
    assert "good-000000.tar key=00000003" in r.stdout
    assert "sha256 does not match" in r.stdout  # the sidecar's checksum catches the flipped bytes too
    assert "3 shard(s) checked" in r.stdout


def test_index_build_writes_sidecar(runs: dict[str, Any]) -> None:
    r = runs["results"]["index_build"]
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["samples"] == 7
    assert (runs["root"] / "plain.tar.idx.json").exists()


def test_convert_plain_webdataset(runs: dict[str, Any]) -> None:
    r = runs["results"]["convert"]
    assert r.returncode == 0, r.stderr
    assert "wrote 7 samples to 3 shard(s)" in r.stdout
    out = atd.Dataset(str(runs["root"] / "conv" / "c-{000000..000002}.tar"))
    assert len(out) == 7  # from the sidecars the converter wrote
    samples = out.head(7)
    assert [s.cls for s in samples] == list(range(7))
    assert samples[2].json == {"i": 2} and samples[2].txt == "t2"
    assert out.get("s004").cls == 4  # keys are kept


def test_cache_commands(runs: dict[str, Any]) -> None:
    r = runs["results"]["cache_ls"]
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"entries": [], "bytes": 0}
    assert runs["results"]["cache_clear"].returncode == 0
    assert "removed 0 cached shard(s)" in runs["results"]["cache_clear"].stdout


def test_usage_error_exit_code(runs: dict[str, Any]) -> None:
    r = runs["results"]["bad_usage"]
    assert r.returncode == 2
    assert "Missing argument" in r.stderr


@pytest.mark.integration
def test_login_publish_info_ls_against_a_pds(atproto_net: dict[str, Any], tmp_path: Path) -> None:
    """login (password on stdin) -> session file 0600 -> publish from the index -> info/ls by at:// and @handle."""
    import stat
    import uuid

    name = f"cli-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "ATDATA_TORCH_INDEX": str(tmp_path / "index.db"),
        "ATDATA_TORCH_DATA_DIR": str(tmp_path / "store"),
        "ATDATA_TORCH_SESSION": str(tmp_path / "cfg" / "session.json"),
        "ATDATA_PLC_URL": atproto_net["plcUrl"],
        "ATDATA_PDS_URL": atproto_net["pdsUrl"],
    }
    env.pop("ATDATA_PASSWORD", None)
    with atd.Index(tmp_path / "index.db") as index:
        index.write_samples(
            [CliRec(x=np.full(3, i, np.float32), label=i, name=f"n{i}") for i in range(4)],
            name=name,
            version="1.0.0",
            progress=False,
        )

    def run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_exe(), *args], capture_output=True, text=True, timeout=180, env=env, input=stdin)

    bad = run(["login", "alice.test", "--password-stdin"], stdin="wrong-pass\n")
    assert bad.returncode == 1 and "failed" in bad.stderr and "wrong-pass" not in bad.stderr + bad.stdout
    ok = run(["login", "alice.test", "--password-stdin"], stdin="alice-pass\n")
    assert ok.returncode == 0, ok.stderr
    assert "logged in as alice.test" in ok.stdout and "alice-pass" not in ok.stdout
    session = tmp_path / "cfg" / "session.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600

    pub = run(["publish", name, "--no-progress"])
    assert pub.returncode == 0, pub.stderr
    uri = pub.stdout.strip()
    assert uri.startswith("at://did:plc:") and "/science.alt.dataset.entry/" in uri

    info = run(["info", uri, "--json"])
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["samples"] == 4
    info2 = run(["info", f"@alice.test/{name}@1.0.0", "--json"])
    assert info2.returncode == 0 and json.loads(info2.stdout)["samples"] == 4
    listed = run(["ls", "@alice.test", "--json"])
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["name"] == name)
    assert row["uri"] == uri and row["versions"] == ["1.0.0"] and row["storage"] == "blobs"
    missing = run(["info", "@alice.test/no-such-thing"])
    assert missing.returncode == 1 and "no dataset named" in missing.stderr
