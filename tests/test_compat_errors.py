"""Errors through the original atdata's spelling (issue 17): its classes with its constructor arguments, and our
errors caught by the ``except`` clauses written for the builtins the original raised in the same places."""

from __future__ import annotations

import copy
import os
import pickle
import tarfile
from pathlib import Path

import msgpack
import pytest

import atdata_torch as atdata
from atdata_torch import _exceptions


@atdata.packable
class ErrRec:
    n: int
    name: str


def _write(tmp_path: Path, n: int = 4, maxcount: int | None = None) -> atdata.Dataset[ErrRec]:
    return atdata.write_samples(
        [ErrRec(n=i, name=f"s{i}") for i in range(n)], str(tmp_path / "e.tar"), maxcount=maxcount, progress=False
    )


def test_shard_error_takes_the_originals_arguments() -> None:
    err = atdata.ShardError("https://u:pw@h/a.tar", "truncated")
    assert str(err) == "Failed to read shard 'https://***@h/a.tar': truncated"
    assert err.shard_id == "https://***@h/a.tar" and err.reason == "truncated"
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is atdata.ShardError and str(again) == str(err)


def test_our_shard_errors_are_shard_errors() -> None:
    for cls in (atdata.SourceError, atdata.ShardNotFoundError, atdata.ShardFormatError, atdata.ChecksumError):
        assert issubclass(cls, atdata.ShardError), cls
        err = cls("broken", shard="x.tar", offset=3)
        assert err.shard_id == "x.tar" and err.reason == "broken"
        assert str(err) == "broken [shard=x.tar offset=3]"
        assert str(pickle.loads(pickle.dumps(err))) == str(err)
    assert not issubclass(atdata.DecodeError, atdata.ShardError)


def test_sample_key_error() -> None:
    err = atdata.SampleKeyError("k9")
    assert isinstance(err, KeyError) and err.key == "k9" and "'k9'" in str(err)
    assert str(copy.copy(err)) == str(err) == str(pickle.loads(pickle.dumps(err)))


def test_dataset_get_of_a_missing_key_is_a_sample_key_error(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    with pytest.raises(atdata.SampleKeyError) as info:
        ds.get("nope")
    assert isinstance(info.value, KeyError) and info.value.key == "nope"


def test_appview_errors_take_the_originals_arguments() -> None:
    un = atdata.AppViewUnavailableError("https://u:secret@appview.test", "HTTP 503")
    assert un.url == "https://***@appview.test" and un.reason == "HTTP 503" and "secret" not in str(un)
    assert "AppView at https://***@appview.test is unavailable: HTTP 503" in str(un)
    req = atdata.AppViewRequiredError("search_datasets")
    assert req.operation == "search_datasets" and "'search_datasets' requires an AppView" in str(req)
    for err in (un, req):
        assert isinstance(err, atdata.AppViewError) and isinstance(err, atdata.PublishError)
        assert str(pickle.loads(pickle.dumps(err))) == str(err)
    assert str(atdata.AppViewError("plain")) == "plain"


def test_the_originals_module_path() -> None:
    for name in _exceptions.__all__:
        assert getattr(_exceptions, name) is getattr(atdata, name)
    with pytest.raises(AttributeError):
        _exceptions.NoSuchError  # noqa: B018


# ------------------------------------------------------------------------------------------------ builtins
def test_a_missing_required_field_is_also_a_type_error(tmp_path: Path) -> None:
    import webdataset as wds

    path = str(tmp_path / "missing.tar")
    with wds.TarWriter(path) as sink:
        sink.write({"__key__": "k0", "msgpack": msgpack.packb({"n": 1})})  # no "name"
    with pytest.raises(TypeError) as info:
        list(atdata.Dataset[ErrRec](path).ordered())
    assert isinstance(info.value, atdata.DecodeError) and "name" in str(info.value)


def test_a_payload_that_is_not_a_map_is_also_a_type_error(tmp_path: Path) -> None:
    import webdataset as wds

    path = str(tmp_path / "list.tar")
    with wds.TarWriter(path) as sink:
        sink.write({"__key__": "k0", "msgpack": msgpack.packb([1, "a"])})
    with pytest.raises(TypeError):
        list(atdata.Dataset[ErrRec](path).ordered())


def test_a_truncated_shard_is_also_a_tarfile_read_error(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    (shard,) = ds.list_shards()
    data = Path(shard).read_bytes()
    Path(shard).write_bytes(data[:1600])  # inside the second sample (its header is at 1024)
    os.remove(shard + ".idx.json")
    with pytest.raises(tarfile.ReadError) as info:
        list(atdata.Dataset[ErrRec](shard).ordered())
    assert isinstance(info.value, atdata.ShardFormatError) and isinstance(info.value, ValueError)


def test_a_file_that_is_no_tar_is_also_a_tarfile_read_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.tar"
    path.write_bytes(b"not a tar at all" * 64)
    with pytest.raises(tarfile.ReadError):
        list(atdata.Dataset[ErrRec](str(path)).ordered())


def test_an_unknown_shard_is_also_a_key_error(tmp_path: Path) -> None:
    src = atdata.MemorySource({"a.tar": b""})
    with pytest.raises(KeyError):
        src.open_shard("b.tar")
    with pytest.raises(KeyError):
        atdata.BlobSource([{"did": "did:plc:x", "cid": "bafy1"}], pds_endpoint="http://127.0.0.1:9").open_shard(
            "at://did:plc:x/blob/other"
        )
    with pytest.raises(KeyError):  # and a missing file (also a FileNotFoundError, as before)
        list(atdata.Dataset[ErrRec](str(tmp_path / "absent.tar")).ordered())


def test_the_mro_stays_sane() -> None:
    mro = atdata.ShardNotFoundError.__mro__
    assert mro.index(atdata.SourceError) < mro.index(atdata.ShardError) < mro.index(atdata.AtdataError)
    assert mro.index(FileNotFoundError) < mro.index(OSError) and KeyError in mro
    assert not issubclass(atdata.ShardFormatError, OSError)
    assert not issubclass(atdata.SchemaError, ValueError)


def test_an_unknown_shard_of_a_concat_source_is_a_key_error() -> None:
    both = atdata.ConcatSource([atdata.MemorySource({"a.tar": b""}), atdata.MemorySource({"b.tar": b""})])
    with pytest.raises(KeyError) as info:
        both.open_shard("c.tar")
    assert isinstance(info.value, atdata.ShardNotFoundError) and "none of the concatenated" in str(info.value)


# --- issue 17 (c17s): the original's SchemaError(name, expected_fields, actual_fields)
def test_schema_error_takes_the_originals_field_mismatch_form() -> None:
    err = atdata.SchemaError("ImageSample", ["image", "label"], ["image", "caption"])
    assert err.sample_type_name == "ImageSample"
    assert err.expected_fields == ["image", "label"] and err.actual_fields == ["image", "caption"]
    text = str(err)
    assert text.startswith("Schema mismatch for ImageSample")
    assert "Missing fields: label" in text and "Unexpected fields: caption" in text
    assert "Expected: image, label" in text and "Got:      caption, image" in text
    assert isinstance(err, TypeError) and isinstance(err, atdata.AtdataError)


def test_schema_error_keeps_our_message_form() -> None:
    err = atdata.SchemaError("field 'x' is an object array", field="x", shard="a.tar")
    assert err.expected_fields == [] and err.actual_fields == []
    assert str(err) == "field 'x' is an object array [shard=a.tar field=x]"
    with pytest.raises(atdata.SchemaError, match="Schema mismatch for T"):
        raise atdata.SchemaError("T", ["a"], None)
