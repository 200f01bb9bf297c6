"""_splits: split-name aliases and split selection on a DatasetDict (detection, the grammar and DatasetDict's
behaviour through load_dataset are tested in test_load.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from remote_data import Rec, records

import atdata_torch as atd
from atdata_torch import _splits, load


def test_split_name_aliases() -> None:
    assert [_splits.split_name(n) for n in ("training", "dev", "val", "testing", "extra")] == [
        "train",
        "validation",
        "validation",
        "test",
        "extra",
    ]


def test_load_reexports_the_split_names() -> None:
    assert load.DatasetDict is _splits.DatasetDict is atd.DatasetDict
    assert load.parse_split is _splits.parse_split and load.detect_split is _splits.detect_split
    assert load.Bound is _splits.Bound and load.SplitTerm is _splits.SplitTerm


def test_select_split_slices_and_concatenates(tmp_path: Path) -> None:
    train, test = tmp_path / "train.tar", tmp_path / "test.tar"
    atd.write_samples(records(10, width=4), train, progress=False)
    atd.write_samples(records(4, start=100, width=4), test, progress=False)
    dd = _splits.DatasetDict(
        {"train": atd.Dataset(str(train), sample_type=Rec), "test": atd.Dataset(str(test), sample_type=Rec)}, Rec
    )
    got = _splits.select_split(dd, "train[:20%]+test[-1:]")
    assert [int(s.label) for s in got.ordered()] == [0, 1, 103]
    with pytest.raises(atd.SplitError, match=r"available splits: \['test', 'train'\]"):
        _splits.select_split(dd, "validation")
