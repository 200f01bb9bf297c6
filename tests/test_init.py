"""The public API: a curated, sorted __all__, and no optional dependency imported at import time."""

from __future__ import annotations

import subprocess
import sys

import pytest

import atdata_torch


def test_all_is_sorted_and_resolvable() -> None:
    names = atdata_torch.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    for n in names:
        assert hasattr(atdata_torch, n), n


def test_import_does_not_import_optional_backends() -> None:
    code = (
        "import sys, atdata_torch\n"
        "bad = [m for m in ('boto3', 'botocore', 'redis', 'atproto', 'lightning', 'pytorch_lightning', 'sklearn')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_py_typed_marker_ships() -> None:
    from pathlib import Path

    assert (Path(atdata_torch.__file__).parent / "py.typed").exists()


def test_cli_entry_point_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    @atdata_torch.packable
    class CliSample:
        x: atdata_torch.NDArray

    atdata_torch.write_samples([CliSample(x=np.zeros(2))], str(tmp_path / "a.tar"), progress=False)
    out = subprocess.run(
        [sys.executable, "-m", "atdata_torch.cli", "info", str(tmp_path / "a.tar"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"samples": 1' in out.stdout


def test_internals_stay_reachable_but_are_not_the_api() -> None:
    from atdata_torch._pipeline import Pipeline, SkipReport
    from atdata_torch._sidecar import ShardIndex
    from atdata_torch.schema import FieldSpec

    for name, obj in (("Pipeline", Pipeline), ("SkipReport", SkipReport), ("ShardIndex", ShardIndex)):
        assert getattr(atdata_torch, name) is obj
        assert name not in atdata_torch.__all__
    assert atdata_torch.FieldSpec is FieldSpec and "FieldSpec" not in atdata_torch.__all__
    assert {"Pipeline", "Dataset", "nodes"} <= set(dir(atdata_torch))


def test_import_is_cheap_and_loads_names_on_first_use() -> None:
    code = (
        "import sys, atdata_torch as atd\n"
        "before = [m for m in ('torch', 'numpy', 'atdata_torch.dataset') if m in sys.modules]\n"
        "import atdata_torch.collate, atdata_torch.lens\n"  # a submodule import keeps the function of its name
        "assert callable(atd.collate) and callable(atd.lens) and atd.Dataset.__name__ == 'Dataset'\n"
        "print(','.join(before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---- issue 17 (c17t): the top-level main and the deprecated names, as the original atdata has them

# A schema record as the original atdata 0.7 wrote it (index.get_schema of a published class).
_ORIGINAL_SCHEMA = {
    "name": "Pt",
    "version": "1.0.0",
    "fields": [
        {"name": "x", "fieldType": {"$type": "local#primitive", "primitive": "float"}, "optional": False},
        {"name": "label", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": False},
        {"name": "img", "fieldType": {"$type": "local#ndarray", "dtype": "float32"}, "optional": False},
        {"name": "n", "fieldType": {"$type": "local#primitive", "primitive": "int"}, "optional": True},
    ],
    "description": "Pt(x: float, label: str, img: NDArray, n: int | None = None)",
}


def test_main_runs_the_cli_and_returns_its_exit_code(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from atdata_torch._toplevel import main

    assert atdata_torch.main is main and "main" in atdata_torch.__all__
    assert atdata_torch.main(["version"]) == 0
    assert capsys.readouterr().out == f"atdata-torch {atdata_torch.__version__}\n"

    @atdata_torch.packable
    class MainSample:
        x: atdata_torch.NDArray

    atdata_torch.write_samples([MainSample(x=np.zeros(2))] * 3, str(tmp_path / "a.tar"), progress=False)
    assert atdata_torch.main(["info", str(tmp_path / "a.tar"), "--json"]) == 0
    assert '"samples": 3' in capsys.readouterr().out
    assert atdata_torch.main(["info", str(tmp_path / "missing.tar")]) == 1  # returns, never exits
    assert "missing.tar" in capsys.readouterr().err
    assert atdata_torch.main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err
    assert atdata_torch.main(["--help"]) == 0
    assert "Usage:" in capsys.readouterr().out


def test_schema_to_type_is_deprecated_and_rebuilds_the_originals_record() -> None:
    import numpy as np

    assert "schema_to_type" in dir(atdata_torch) and "schema_to_type" not in atdata_torch.__all__
    with pytest.warns(
        DeprecationWarning, match=r"atdata\.schema_to_type\(\) is deprecated, use index\.get_schema_type"
    ):
        cls = atdata_torch.schema_to_type(_ORIGINAL_SCHEMA)
    with pytest.warns(DeprecationWarning):
        again = atdata_torch.schema_to_type(_ORIGINAL_SCHEMA, use_cache=False)
    assert again is cls and cls.__name__ == "Pt"
    s = cls(x=1.5, label="a", img=np.ones(2, np.float32))
    assert (s.x, s.label, s.n) == (1.5, "a", None)
    with pytest.warns(DeprecationWarning), pytest.raises(atdata_torch.SchemaError):
        atdata_torch.schema_to_type({"name": "Broken", "version": "1.0.0", "fields": []})


def test_abstract_index_warns_on_every_access_and_is_index() -> None:
    assert "AbstractIndex" not in dir(atdata_torch) and "AbstractIndex" not in atdata_torch.__all__
    for _ in range(2):  # not kept in the namespace: each access warns, as in the original
        with pytest.warns(DeprecationWarning, match=r"atdata\.AbstractIndex is deprecated\. Use atdata\.Index") as rec:
            cls = atdata_torch.AbstractIndex
        assert rec[0].filename == __file__  # points at the user's line
    assert cls is atdata_torch.Index
    with pytest.raises(AttributeError, match="no attribute 'AbstractIndexx'"):
        atdata_torch.AbstractIndexx  # noqa: B018
