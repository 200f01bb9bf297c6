"""The quickstart run twice: the second run reuses the first one's shards and index entry; a damaged shard rebuilds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import atdata_torch as atd

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path, *args: str) -> str:
    """Run the quickstart in a subprocess (``args``: its options; by default a quick one-epoch run)."""
    args = args or ("--out", str(tmp_path / "qs"), "--epochs", "1", "--workers", "0", "--index", str(tmp_path / "i.db"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _shards(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((tmp_path / "qs").rglob("*.tar"))}


@pytest.mark.slow
def test_quickstart_twice_reuses_its_data_and_rebuilds_damaged_data(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert "wrote and indexed digits@1.0.0" in first
    shards = _shards(tmp_path)
    assert len(shards) == 4

    second = _run(tmp_path)
    assert "reusing digits@1.0.0" in second and "intact" in second, second
    assert _shards(tmp_path) == shards  # no second set of shards
    with atd.Index(str(tmp_path / "i.db")) as index:
        entries = index.list_datasets()
        assert len(entries) == 1 and entries[0].name == "digits"
        cid = entries[0].cid
        assert index.get_dataset("digits@1.0.0").cid == cid

    # A damaged shard is noticed and the data is written again; the label moves to the new entry.
    victim = sorted((tmp_path / "qs").rglob("*.tar"))[0]
    raw = bytearray(victim.read_bytes())
    raw[700] ^= 0xFF
    victim.write_bytes(bytes(raw))
    third = _run(tmp_path)
    assert "rebuilt:" in third and "does not match its recorded sha256" in third, third
    with atd.Index(str(tmp_path / "i.db")) as index:
        assert index.get_dataset("digits@1.0.0").cid != cid


@pytest.mark.slow
def test_quickstart_trains_to_good_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    text = _run(tmp_path, "--out", str(out), "--epochs", "6", "--index", str(tmp_path / "index.db"))
    m = re.search(r"test accuracy: ([0-9.]+)", text)
    assert m is not None, text
    assert float(m.group(1)) > 0.85
    assert "train: 1437 samples in 3 shards; test: 360 samples" in text
    assert len(list(out.rglob("*.tar"))) == 4 and len(list(out.rglob("*.idx.json"))) == 4
    # The index knows the dataset by name afterwards.
    index = atd.Index(str(tmp_path / "index.db"))
    assert index.get_dataset("digits@1.0.0").name == "digits"
    index.close()
