"""Start and stop the local AT Protocol network (``tests/pds/pds-up.js``: PLC directory + PDS on loopback).

    with LocalPDS(seed_accounts=["alice", "bob"]) as net:
        net.info["pdsUrl"], net.info["plcUrl"], net.info["accounts"]

The npm packages live in :func:`default_prefix` (keyed by the lockfile hash); :func:`ensure_installed` runs
``install.sh`` once. Node's output goes to a log file (a pipe nobody reads would block the server), and the server
exits when this process dies (``PDS_EXIT_ON_STDIN_EOF=1``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "pds"


def lock_hash() -> str:
    return hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()[:16]


def default_prefix() -> Path:
    env = os.environ.get("ATDATA_TORCH_PDS_PREFIX")
    if env:
        return Path(env)
    return Path.home() / ".cache" / f"atdata-torch-pds-{lock_hash()}"


def is_installed(prefix: Path) -> bool:
    return (prefix / "node_modules/@atproto/pds/package.json").is_file() and (
        prefix / "node_modules/better-sqlite3/build/Release/better_sqlite3.node"
    ).is_file()


def missing_tools() -> list[str]:
    return [t for t in ("node", "npm", "make", "g++", "python3") if shutil.which(t) is None]


def ensure_installed(prefix: Path, timeout: float = 900.0) -> None:
    """Install the npm packages into ``prefix`` unless they are there (about 75-90 s the first time)."""
    if is_installed(prefix):
        return
    env = dict(os.environ, LOCAL_PDS_PREFIX=str(prefix))
    proc = subprocess.run(
        ["bash", str(HERE / "install.sh")], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0 or not is_installed(prefix):
        raise RuntimeError(
            f"installing the local PDS into {prefix} failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
        )


class LocalPDS:
    """The network as a context manager; ``info`` holds ``pdsUrl``, ``plcUrl``, ``accounts`` (handle, password, did)."""

    def __init__(
        self,
        seed_accounts: Sequence[str] = (),
        blob_upload_limit: int | None = None,
        prefix: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.prefix = prefix or default_prefix()
        self.seed_accounts = list(seed_accounts)
        self.blob_upload_limit = blob_upload_limit
        self.extra_env = dict(env or {})
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_path = ""

    def start(self) -> dict[str, Any]:
        self._tmp = tempfile.TemporaryDirectory(prefix="atdata-torch-pds-run-")
        info_file = os.path.join(self._tmp.name, "info.json")
        self.log_path = os.path.join(self._tmp.name, "pds.log")
        env = dict(os.environ)
        env["LOCAL_PDS_PREFIX"] = str(self.prefix)
        env["PDS_INFO_FILE"] = info_file
        env["PDS_EXIT_ON_STDIN_EOF"] = "1"
        env["PDS_DATA_DIR"] = os.path.join(self._tmp.name, "data")
        if self.seed_accounts:
            env["PDS_SEED_ACCOUNTS"] = ",".join(self.seed_accounts)
        if self.blob_upload_limit:
            env["PDS_BLOB_UPLOAD_LIMIT"] = str(self.blob_upload_limit)
        env.update(self.extra_env)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["node", str(HERE / "pds-up.js")], env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(info_file):
            if self.proc.poll() is not None:
                raise RuntimeError(f"pds-up.js exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"local PDS not ready after {self.timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        with open(info_file) as f:
            self.info = json.load(f)
        return self.info

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdin:
            self.proc.stdin.close()
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalPDS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
