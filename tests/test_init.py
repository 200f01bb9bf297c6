"""The public API: a curated, sorted __all__, and no optional dependency imported at import time."""

from __future__ import annotations

import subprocess
import sys

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
