"""Refused inputs say where they belong: iteration options given to a local source, globs that match nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import atdata_torch as atd


@atd.packable
class HintRec:
    x: atd.NDArray


def test_load_dataset_shuffle_says_the_option_belongs_to_the_loader(tmp_path: Path) -> None:
    atd.write_samples([HintRec(x=np.zeros(2))], str(tmp_path / "train.tar"), progress=False)
    with pytest.raises(TypeError, match=r"shuffle -> ds\.loader\(shuffle=True\) or ds\.shuffled\(\)"):
        atd.load_dataset(str(tmp_path / "train.tar"), HintRec, shuffle=True)
    with pytest.raises(TypeError, match=r"options \['bogus'\] do not apply to local files \(local files take only"):
        atd.Dataset(str(tmp_path / "train.tar"), bogus=1)


def test_a_glob_matching_nothing_is_reported_as_a_pattern(tmp_path: Path) -> None:
    pattern = str(tmp_path / "none-*.tar")
    with pytest.raises(atd.ShardNotFoundError, match="no shard matches the pattern"):
        len(atd.Dataset(pattern))
    with pytest.raises(atd.ShardNotFoundError, match="does not exist"):
        len(atd.Dataset(str(tmp_path / "none-000000.tar")))
