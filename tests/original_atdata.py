"""The original atdata in its own virtualenv, for tests that write with one library and read with the other.

The original (``atdata==0.7.0b1``) needs Python >= 3.12, so it cannot share this environment: a virtualenv is kept
outside the clone, in ``$ATDATA_TORCH_ORIGINAL_CACHE`` or ``~/.cache/atdata-torch-original/<version>``, created
once (``uv venv`` + ``uv pip install atdata==<version>``) from the first Python >= 3.12 found
(``$ATDATA_TORCH_ORIGINAL_PYTHON``, ``python3.12``/``3.13``/... on PATH, pyenv's versions, ``uv python find``).

Scripts run in it as subprocesses: a script reads one JSON object on stdin and prints one JSON object as the last
line of stdout (no pickle crosses the boundary). ``.ci/run`` creates the environment before the tests
(``python tests/original_atdata.py``); the ``original_atdata`` fixture in ``conftest.py`` skips the tests that need it
where no Python >= 3.12 exists, and fails them under ``ATDATA_TORCH_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VERSION = "0.7.0b1"
_MIN = (3, 12)
_READY = ".atdata-torch-ready"


class OriginalUnavailable(RuntimeError):
    """No environment with the original atdata can be had here (the message says why)."""


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _candidates() -> Iterator[str]:
    env = os.environ.get("ATDATA_TORCH_ORIGINAL_PYTHON")
    if env:
        yield env
    for minor in range(12, 20):
        found = shutil.which(f"python3.{minor}")
        if found and "/shims/" not in found:  # a pyenv shim fails unless that version is selected
            yield found
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    yield from sorted(glob.glob(os.path.join(root, "versions", "3.1[2-9]*", "bin", "python3")))
    uv = shutil.which("uv")
    if uv:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([uv, "python", "find", ">=3.12"], capture_output=True, text=True, timeout=60)
            if out.returncode == 0 and out.stdout.strip():
                yield out.stdout.strip()


def find_python() -> str | None:
    """The first Python >= 3.12 interpreter found, or ``None``."""
    for python in _candidates():
        v = _version_of(python)
        if v is not None and v >= _MIN:
            return python
    return None


def env_dir(version: str = VERSION) -> Path:
    """Where the virtualenv with ``atdata==version`` lives."""
    base = os.environ.get("ATDATA_TORCH_ORIGINAL_CACHE") or os.path.expanduser("~/.cache/atdata-torch-original")
    return Path(base) / version


def _env_python(d: Path) -> Path:
    return d / "bin" / "python"


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise OriginalUnavailable(f"{' '.join(cmd)} failed ({out.returncode}): {(out.stderr or out.stdout)[-2000:]}")


def ensure_env(version: str = VERSION) -> Path:
    """The Python of a virtualenv with ``atdata==version`` (created on first use; a file lock guards concurrent
    creation).

    Raises:
        OriginalUnavailable: when no Python >= 3.12 is found or the installation fails.
    """
    d = env_dir(version)
    if (d / _READY).exists():
        return _env_python(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(str(d) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (d / _READY).exists():
            return _env_python(d)
        python = find_python()
        if python is None:
            raise OriginalUnavailable(
                "no Python >= 3.12 was found (set ATDATA_TORCH_ORIGINAL_PYTHON, or install one: uv python install 3.12)"
            )
        shutil.rmtree(d, ignore_errors=True)
        uv = shutil.which("uv")
        if uv:
            _run([uv, "venv", "-q", "-p", python, str(d)])
            _run([uv, "pip", "install", "-q", "--python", str(_env_python(d)), f"atdata=={version}"])
        else:
            _run([python, "-m", "venv", str(d)])
            _run([str(_env_python(d)), "-m", "pip", "install", "-q", f"atdata=={version}"])
        _run([str(_env_python(d)), "-c", "import atdata, atdata.manifest, webdataset"])
        (d / _READY).write_text(version + "\n")
    return _env_python(d)


class OriginalAtdata:
    """Runs scripts under the original atdata: ``run(script, payload) -> dict`` (JSON in on stdin, the last stdout
    line out as JSON).

    Example:
        >>> # original = OriginalAtdata(ensure_env())
        >>> # original.run("import json, sys, atdata; print(json.dumps({'v': atdata.__version__}))", {})
    """

    def __init__(self, python: Path | str) -> None:
        self.python = str(python)

    def run(self, script: str, payload: dict[str, Any], *, timeout: float = 300) -> dict[str, Any]:
        """Run ``script`` with ``payload`` on stdin; returns the JSON object it prints last.

        Raises:
            AssertionError: when the script fails (its stderr is in the message) or prints no JSON.
        """
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(script)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PYTHONWARNINGS"] = "ignore"
        try:
            out = subprocess.run(
                [self.python, f.name],
                input=json.dumps(payload),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=tempfile.gettempdir(),
            )
        finally:
            os.unlink(f.name)
        if out.returncode != 0:
            raise AssertionError(f"the original atdata script failed ({out.returncode}):\n{out.stderr[-4000:]}")
        lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
        if not lines:
            raise AssertionError(f"the original atdata script printed nothing; stderr:\n{out.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result


if __name__ == "__main__":  # .ci/run: create the environment before the tests
    try:
        print(ensure_env(sys.argv[1] if len(sys.argv) > 1 else VERSION))
    except OriginalUnavailable as exc:
        print(f"original atdata unavailable: {exc}", file=sys.stderr)
        sys.exit(1)
