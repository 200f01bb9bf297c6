"""Examples and docs run as tests: the quickstart, the README's Python blocks, and the docstring examples."""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import atdata_torch

ROOT = Path(__file__).resolve().parent.parent


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
        if block.startswith("# ray:"):
            continue  # the Ray Data block needs a running Ray: tests/test_ray.py runs it on its own
        exec(compile(block, "README.md", "exec"), module.__dict__)


def _readme_block(first_line: str) -> str:
    (block,) = [b for b in _readme_blocks() if b.startswith(first_line)]
    return block


@pytest.mark.slow
def test_readme_train_ddp_block_runs_as_its_own_file(tmp_path: Path) -> None:
    """The README's ``train_ddp.py`` is self-contained: saved as a file, it runs (one rank, gloo, CPU)."""
    import socket

    import numpy as np

    @atdata_torch.packable
    class Point:
        x: atdata_torch.NDArray
        y: float

    points = [Point(x=np.full(8, i, np.float32), y=float(i % 3)) for i in range(128)]
    atdata_torch.write_samples(points, str(tmp_path / "points" / "train.tar"), maxcount=32, progress=False)
    script = tmp_path / "train_ddp.py"
    script.write_text(_readme_block("# train_ddp.py"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "loader.pt").exists()


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
