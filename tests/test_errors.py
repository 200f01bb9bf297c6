"""The error tree: builtin bases, message rendering, pickling (errors cross DataLoader workers)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from numpy.typing import NDArray

import atdata_torch as atd
from atdata_torch import errors

# class -> the builtin exception types it must also be (so existing `except` clauses keep working)
TREE: dict[type[atd.AtdataError], tuple[type[BaseException], ...]] = {
    atd.SchemaError: (TypeError,),
    atd.SourceError: (OSError,),
    atd.ShardNotFoundError: (atd.SourceError, FileNotFoundError, OSError),
    atd.ShardFormatError: (ValueError,),
    atd.DecodeError: (ValueError,),
    atd.LensNotFoundError: (LookupError,),
    atd.SplitError: (ValueError,),
    atd.IndexStoreError: (),
    atd.PublishError: (),
    atd.MissingDependencyError: (ImportError,),
    atd.IndexNotFoundError: (atd.IndexStoreError, KeyError),
    atd.ConfigError: (ValueError,),
    atd.LoaderStateError: (ValueError,),
}
ALL_ERRORS = [atd.AtdataError, *TREE]


@pytest.mark.parametrize("cls", list(TREE), ids=lambda c: c.__name__)
def test_tree(cls: type[atd.AtdataError]) -> None:
    assert issubclass(cls, atd.AtdataError)
    assert issubclass(cls, Exception)
    for base in TREE[cls]:
        assert issubclass(cls, base), f"{cls.__name__} must also be a {base.__name__}"
    err = cls("boom", shard="s.tar")
    for base in (atd.AtdataError, *TREE[cls]):
        with pytest.raises(base):
            raise err


def test_unrelated_branches_stay_apart() -> None:
    assert not issubclass(atd.DecodeError, atd.ShardFormatError)
    assert not issubclass(atd.ShardFormatError, atd.DecodeError)
    assert not issubclass(atd.ShardFormatError, OSError)
    assert not issubclass(atd.SchemaError, ValueError)
    assert issubclass(atd.SkippedSamplesWarning, UserWarning)
    assert not issubclass(atd.SkippedSamplesWarning, atd.AtdataError)


def test_every_error_is_exported() -> None:
    for name in errors.__all__:
        assert getattr(atd, name) is getattr(errors, name)
        assert name in atd.__all__


def test_every_public_error_class_lives_in_errors() -> None:
    import ast

    # An error a caller may catch is defined in errors.py (and exported, above). TransientError is the remote
    # sources' internal retry signal: it never leaves the retry loop.
    internal = {"TransientError"}
    pkg = Path(atd.__file__).parent
    outside = []
    for path in sorted(pkg.rglob("*.py")):
        if path == pkg / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and node.name not in internal:
                outside.append(f"{path.relative_to(pkg)}: {node.name}")
    assert outside == [], "define public errors in atdata_torch/errors.py"


def test_moved_errors_stay_importable_from_their_old_modules() -> None:
    from atdata_torch.config import ConfigError
    from atdata_torch.index import IndexNotFoundError
    from atdata_torch.index._records import IndexNotFoundError as FromRecords
    from atdata_torch.loader import LoaderStateError

    assert ConfigError is errors.ConfigError
    assert IndexNotFoundError is FromRecords is errors.IndexNotFoundError
    assert LoaderStateError is errors.LoaderStateError


def test_message_rendering() -> None:
    assert str(atd.DecodeError("bad payload")) == "bad payload"
    err = atd.DecodeError("bad payload", shard="a.tar", key="k0", offset=0, field="x")
    assert str(err) == "bad payload [shard=a.tar key=k0 offset=0 field=x]"
    assert err.message == "bad payload"
    assert (err.shard, err.key, err.offset, err.field) == ("a.tar", "k0", 0, "x")
    assert err.args == ("bad payload [shard=a.tar key=k0 offset=0 field=x]",)
    assert str(atd.SchemaError("no", field="y")) == "no [field=y]"
    assert str(atd.ShardFormatError("cut", shard="b.tar", offset=1024)) == "cut [shard=b.tar offset=1024]"


def test_defaults_are_none() -> None:
    err = atd.AtdataError("plain")
    assert (err.shard, err.key, err.offset, err.field) == (None, None, None, None)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "context",
    [
        {},
        {"shard": "s3://bucket/train-000001.tar", "key": "sample/0042", "offset": 10240, "field": "image"},
        {"shard": "a.tar", "offset": 0},
        {"field": "label"},
    ],
    ids=["bare", "full", "shard-offset", "field"],
)
def test_errors_survive_pickling(cls: type[atd.AtdataError], context: dict[str, Any]) -> None:
    err = cls("what was expected, what was found, and the fix", **context)
    for again in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert type(again) is cls
        assert str(again) == str(err)
        assert again.message == err.message
        assert again.args == err.args
        for name in ("shard", "key", "offset", "field"):
            assert getattr(again, name) == context.get(name)


def test_pickling_with_every_protocol() -> None:
    err = atd.ShardNotFoundError("missing", shard="x.tar")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(err, protocol=protocol))
        assert isinstance(again, FileNotFoundError)
        assert again.shard == "x.tar"
        assert str(again) == "missing [shard=x.tar]"


def test_user_subclass_pickles() -> None:
    err = _MyDecodeError("custom", key="k")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is _MyDecodeError
    assert again.key == "k"
    assert isinstance(again, ValueError)


class _MyDecodeError(atd.DecodeError):
    pass


def test_missing_dependency_message_names_the_extra() -> None:
    err = atd.MissingDependencyError.for_extra("boto3", "s3", "S3 sources")
    assert isinstance(err, ImportError)
    msg = str(err)
    assert "S3 sources" in msg
    assert "'boto3'" in msg
    assert "pip install 'atdata-torch[s3]'" in msg
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == msg
    assert type(again) is atd.MissingDependencyError


# ------------------------------------------------------------------------------------------------
# errors the library raises for real: precise, chained, picklable


@atd.packable
class ErrRec:
    x: NDArray[np.float32]
    label: int


def test_real_decode_error_is_chained_and_picklable(
    tmp_path: Path, tar_bytes: Callable[[list[tuple[str, bytes]]], bytes]
) -> None:
    good = ErrRec(x=np.zeros(2, np.float32), label=0).packed
    bad = msgpack.packb({"x": atd.array_to_bytes(np.zeros(2, np.int64)), "label": 1})
    path = tmp_path / "bad.tar"
    path.write_bytes(tar_bytes([("a.msgpack", good), ("b.msgpack", bad)]))
    with pytest.raises(atd.DecodeError) as info:
        for _ in atd.Dataset[ErrRec](str(path)):
            pass
    err = info.value
    assert (err.shard, err.key, err.offset, err.field) == (str(path), "b", 1024, "x")
    assert err.__cause__ is not None  # raise ... from: the original error is kept
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is atd.DecodeError
    assert str(again) == str(err)
    assert (again.shard, again.key, again.offset, again.field) == (str(path), "b", 1024, "x")


def test_real_shard_format_error_is_picklable(tmp_path: Path) -> None:
    path = tmp_path / "junk.tar"
    path.write_bytes(b"x" * 1024)  # not a tar: the first header's checksum is wrong
    with pytest.raises(atd.ShardFormatError) as info:
        for _ in atd.Dataset[ErrRec](str(path)):
            pass
    err = info.value
    assert err.shard == str(path)
    assert err.offset == 0
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is atd.ShardFormatError
    assert (again.shard, again.offset, str(again)) == (err.shard, err.offset, str(err))


def test_real_shard_not_found_error_is_picklable(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope-{000000..000001}.tar")
    with pytest.raises(atd.ShardNotFoundError) as info:
        len(atd.Dataset[ErrRec](missing))
    err = info.value
    assert err.shard == str(tmp_path / "nope-000000.tar")
    assert "check the path" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is atd.ShardNotFoundError
    assert isinstance(again, FileNotFoundError)
    assert (again.shard, str(again)) == (err.shard, str(err))


def test_real_schema_error_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(atd.SchemaError) as info:
        atd.write_samples(
            [ErrRec(x=np.zeros(2, np.float64), label=0)],  # type: ignore[arg-type]
            tmp_path / "w.tar",
            progress=False,
        )
    err = info.value
    assert isinstance(err, TypeError)
    assert err.field == "x"
    assert "float32" in str(err)
    assert pickle.loads(pickle.dumps(err)).field == "x"
