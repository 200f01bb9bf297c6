"""Saved AT Protocol sessions: one JSON file, owner-only, written atomically; tokens never printed.

The file holds the handle, DID, PDS endpoint and the SDK's session string (access and refresh tokens). It is
created with mode ``0600`` inside a ``0700`` directory, replaced atomically (temp file + rename) whenever the SDK
refreshes the tokens, and refused when other users can read it.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "session.json")
    >>> save_session(path, {"handle": "alice.test", "did": "did:plc:x", "pds": "http://pds", "session": "secret"})
    >>> oct(os.stat(path).st_mode & 0o777), load_session(path)["handle"]
    ('0o600', 'alice.test')
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from ..errors import AuthError

__all__ = ["default_session_path", "load_session", "save_session"]


def default_session_path() -> Path:
    """``$ATDATA_TORCH_SESSION``, else ``$XDG_CONFIG_HOME/atdata-torch/session.json`` (``~/.config/...``).

    Example:
        >>> default_session_path().name
        'session.json'
    """
    env = os.environ.get("ATDATA_TORCH_SESSION")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "atdata-torch" / "session.json"


def save_session(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write the session file (mode 0600, atomically; the directory is created 0700)."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".session-", suffix=".tmp")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_session(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a session file.

    Raises:
        AuthError: it does not exist, is not a session file, or other users can read it.
    """
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise AuthError(
            f"no saved AT Protocol session at {p}; log in first (atdata-torch login HANDLE, or "
            "Atmosphere.login(handle, password, save_session=True))"
        ) from None
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthError(
            f"the session file {p} is readable by other users (mode {oct(st.st_mode & 0o777)}); it holds login "
            f"tokens: run chmod 600 {p}, or log in again"
        )
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise AuthError(f"{p} is not a readable session file ({type(exc).__name__}); log in again") from None
    if not isinstance(data, dict) or not data.get("session"):
        raise AuthError(f"{p} is not an atdata-torch session file; log in again")
    return data
