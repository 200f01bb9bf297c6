"""Examples and docs run as tests: the quickstart, the README's Python blocks, and the docstring examples."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import atdata_torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_trains_to_good_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "quickstart.py"),
            *("--out", str(out), "--epochs", "6", "--index", str(tmp_path / "index.db")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"test accuracy: ([0-9.]+)", proc.stdout)
    assert m is not None, proc.stdout
    assert float(m.group(1)) > 0.85
    assert "train: 1437 samples in 3 shards; test: 360 samples" in proc.stdout
    assert len(list(out.rglob("*.tar"))) == 4 and len(list(out.rglob("*.idx.json"))) == 4
    # The index knows the dataset by name afterwards.
    import atdata_torch as atd

    index = atd.Index(str(tmp_path / "index.db"))
    assert index.get_dataset("digits@1.0.0").name == "digits"
    index.close()


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _readme_blocks()
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("readme_blocks")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), module.__dict__)


def _modules() -> list[str]:
    names = ["atdata_torch"]
    for info in pkgutil.walk_packages(atdata_torch.__path__, "atdata_torch."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
