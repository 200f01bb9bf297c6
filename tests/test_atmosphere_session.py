"""Saved sessions: owner-only files, atomic writes, unsafe files refused; no network needed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from atdata_torch.atmosphere._session import default_session_path, load_session, save_session
from atdata_torch.errors import AuthError


def test_saved_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "session.json"
    save_session(path, {"handle": "h", "session": "s1"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    save_session(path, {"handle": "h", "session": "s2"})  # replaced atomically
    assert load_session(path)["session"] == "s2"
    assert [p.name for p in path.parent.iterdir()] == ["session.json"]  # no temp files left


def test_unsafe_or_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="atdata-torch login"):
        load_session(tmp_path / "none.json")
    path = tmp_path / "s.json"
    save_session(path, {"session": "s3cr3t-value"})
    os.chmod(path, 0o640)
    with pytest.raises(AuthError, match="readable by other users") as ei:
        load_session(path)
    assert "s3cr3t-value" not in str(ei.value)
    os.chmod(path, 0o600)
    path.write_text(json.dumps({"nothing": 1}))
    with pytest.raises(AuthError, match="not an atdata-torch session"):
        load_session(path)


def test_default_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATDATA_TORCH_SESSION", str(tmp_path / "x.json"))
    assert default_session_path() == tmp_path / "x.json"
    monkeypatch.delenv("ATDATA_TORCH_SESSION")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_session_path() == tmp_path / "cfg" / "atdata-torch" / "session.json"


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from atdata_torch.atmosphere import Atmosphere
    from atdata_torch.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "atproto", None)
    with pytest.raises(MissingDependencyError, match=r"atdata-torch\[atmosphere\]"):
        Atmosphere.anonymous()
