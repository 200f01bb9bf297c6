"""``as_wds`` (the original atdata's webdataset dict) and value equality, through ``import atdata_torch as atdata``."""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import msgpack
import numpy as np
import pytest
import webdataset as wds
from numpy.typing import NDArray

import atdata_torch as atdata
from atdata_torch._sampleio import values_equal, wds_dict


@atdata.packable
class Frame:
    image: NDArray
    label: str
    score: float


def _frames(n: int) -> list[Frame]:
    return [Frame(image=np.full((2, 3), i, np.uint8), label=f"l{i}", score=i / 2) for i in range(n)]


def _write_with_webdataset(path: Path, dicts: list[dict[str, object]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with wds.TarWriter(str(path)) as sink:
            for d in dicts:
                sink.write(d)


def test_packable_as_wds_is_the_original_dict() -> None:
    s = _frames(1)[0]
    d = s.as_wds
    assert sorted(d) == ["__key__", "msgpack"]
    assert d["msgpack"] == s.packed
    key = uuid.UUID(d["__key__"])
    assert key.version == 1 and key.node == 0 and key.clock_seq == 0  # uuid1(0, 0), as the original
    assert Frame.from_bytes(d["msgpack"]) == s


def test_as_wds_keys_differ_between_calls() -> None:
    s = _frames(1)[0]
    keys = {s.as_wds["__key__"] for _ in range(200)}
    assert len(keys) == 200


def test_dict_sample_as_wds() -> None:
    s = atdata.DictSample(a=1, name="x")
    d = s.as_wds
    assert sorted(d) == ["__key__", "msgpack"]
    assert msgpack.unpackb(d["msgpack"]) == {"a": 1, "name": "x"}
    uuid.UUID(d["__key__"])


def test_tarwriter_write_as_wds_reads_back(tmp_path: Path) -> None:
    samples = _frames(5)
    path = tmp_path / "w.tar"
    _write_with_webdataset(path, [s.as_wds for s in samples])
    ds = atdata.Dataset[Frame](str(path))
    assert list(ds) == samples
    assert len(ds) == 5
    batch = next(iter(ds.ordered(batch_size=5)))
    assert batch.image.shape == (5, 2, 3)


def test_docs_pattern_with_own_keys_reads_back(tmp_path: Path) -> None:
    """The original's docs: ``sink.write({**sample.as_wds, "__key__": f"sample_{i:06d}"})``."""
    samples = _frames(3)
    path = tmp_path / "docs.tar"
    _write_with_webdataset(path, [{**s.as_wds, "__key__": f"sample_{i:06d}"} for i, s in enumerate(samples)])
    ds = atdata.Dataset[Frame](str(path))
    assert ds.get("sample_000002") == samples[2]


def test_dict_sample_tarwriter_reads_back_as_dict_samples(tmp_path: Path) -> None:
    path = tmp_path / "d.tar"
    _write_with_webdataset(path, [atdata.DictSample(n=i, tag=str(i)).as_wds for i in range(4)])
    got = list(atdata.Dataset[atdata.DictSample](str(path)))
    assert [(s.n, s.tag) for s in got] == [(i, str(i)) for i in range(4)]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (np.zeros(2), np.zeros(2), True),
        (np.array([np.nan]), np.array([np.nan]), True),
        (np.zeros(2, np.float32), np.zeros(2, np.float64), False),
        (np.zeros(2), [0.0, 0.0], False),
        ([np.zeros(1), "a"], (np.zeros(1), "a"), True),
        ({"k": np.ones(1)}, {"k": np.zeros(1)}, False),
        ({"k": 1}, {"j": 1}, False),
        ("a", "a", True),
    ],
)
def test_values_equal(a: object, b: object, equal: bool) -> None:
    assert values_equal(a, b) is equal


def test_wds_dict() -> None:
    d = wds_dict(b"x")
    assert d["msgpack"] == b"x" and len(d["__key__"]) == 36
