"""records: the schema/lens records and semver that the index and the AT Protocol share (record contents are
tested through their users in test_index.py and test_atmosphere_lexicon.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import atdata_torch as atd
from atdata_torch import index, records
from atdata_torch.atmosphere import _lex_schema as _lexicon


@atd.packable
class Pt:
    xy: atd.NDArray
    name: str


def test_index_reexports_the_shared_records() -> None:
    assert index.FieldMappingLens is records.FieldMappingLens
    assert index.build_schema_record is records.build_schema_record
    assert index.type_from_record is records.type_from_record


def test_atmosphere_uses_the_same_schema_records() -> None:
    assert _lexicon.build_schema_record is records.build_schema_record
    assert _lexicon.EXT == records.EXT == "atdataTorch"


@pytest.mark.parametrize(
    ("version", "parsed"), [("1.2.3", (1, 2, 3)), ("10.0.1", (10, 0, 1)), ("1.2", None), ("v1.2.3", None)]
)
def test_parse_semver(version: str, parsed: tuple[int, int, int] | None) -> None:
    assert records.parse_semver(version) == parsed


def test_latest_semver_ignores_non_semver() -> None:
    assert records.latest_semver(["1.0.9", "draft", "1.0.10", "0.9.99"]) == "1.0.10"
    assert records.latest_semver(["draft"]) is None


def test_schema_record_roundtrip_and_pickle() -> None:
    rec = records.build_schema_record(Pt, version="1.0.0")
    assert records.parse_schema_ref(records.schema_ref("Pt", "1.0.0")) == ("Pt", "1.0.0")
    T = records.type_from_record(rec)
    assert records.class_signature(T) == records.record_signature(rec)
    s = T.from_bytes(Pt(np.arange(2.0), "a").packed)
    assert s.name == "a"
    assert pickle.loads(pickle.dumps(T)) is T  # rebuilt classes pickle as their record


def test_import_code_ref_only_imports_installed_modules() -> None:
    assert records.import_code_ref("os.path", "basename")("a/b") == "b"
    with pytest.raises(atd.LensNotFoundError, match="not installed"):
        records.import_code_ref("no_such_module_xyz", "f")
