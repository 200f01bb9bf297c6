"""The dataset index: one conformance suite run on SQLite and on a real Redis server.

CRUD, labels and versions, search, schema publish/rebuild, lenses (code references and field mappings), the
original atdata's CIDs, reading (and being read by) the original's SQLite tables and Redis keys, 8 concurrent
writer processes, ``load_dataset("@local/...")``, and the missing-``redis`` error.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgpack
import numpy as np
import pytest
from conftest import require_service
from numpy.typing import NDArray

import atdata_torch as atd
from atdata_torch.errors import IndexStoreError, LensNotFoundError, MissingDependencyError, ShardNotFoundError
from atdata_torch.index import FieldMappingLens, Index, IndexNotFoundError, entry_cid

# ------------------------------------------------------------------------------------------------------------
# sample types and lenses at module level (so that code references to them can be imported back)


@atd.packable
class Digit:
    image: NDArray[np.uint8]
    label: int


@atd.packable
class LabelOnly:
    label: int


@atd.packable
class Renamed:
    y: int
    note: str | None = None


@atd.packable
class TextLabel:
    label: str


@atd.lens
def digit_to_label(d: Digit) -> LabelOnly:
    return LabelOnly(label=d.label)


@digit_to_label.putter
def label_to_digit(v: LabelOnly, d: Digit) -> Digit:
    return Digit(image=d.image, label=v.label)


def digits(n: int, offset: int = 0) -> list[Digit]:
    return [Digit(image=np.full((2, 3), i % 255, np.uint8), label=offset + i) for i in range(n)]


# ------------------------------------------------------------------------------------------------------------
# services and fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port (no persistence), for the whole session."""
    exe = shutil.which("redis-server")
    if exe is None:
        require_service("redis-server", "not on PATH (apt-get install redis-server)")
    try:
        import redis
    except ImportError:
        require_service("redis", "the Python client is not installed (pip install 'atdata-torch[redis]')")
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode() if proc.stderr else ""
                require_service("redis-server", f"it did not start on port {port}: {err[-500:]}")
            time.sleep(0.05)
    client.close()
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real index: the defaults point into the test's temp dir."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ATDATA_TORCH_INDEX", raising=False)
    monkeypatch.delenv("ATDATA_TORCH_DATA_DIR", raising=False)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The backend under test: a SQLite file, or a flushed database of the session's Redis server."""
    if request.param == "sqlite":
        return str(tmp_path / "index.db")
    url: str = request.getfixturevalue("redis_server")
    client = _redis_client(url)
    client.flushall()
    client.close()
    return url


@pytest.fixture
def index(location: str, tmp_path: Path) -> Iterator[Index]:
    idx = Index(location, data_dir=tmp_path / "data")
    yield idx
    idx.close()


def is_redis(location: str) -> bool:
    return location.startswith("redis://")


# ------------------------------------------------------------------------------------------------------------
# CIDs


def test_entry_cid_is_the_originals() -> None:
    # Expected values derived by running the original atdata's algorithm (atdata/_cid.py generate_cid over
    # LocalDatasetEntry's {"schema_ref", "data_urls"}) and cross-checked with a hand-written DAG-CBOR encoder.
    assert (
        entry_cid(
            "atdata://local/schema/ImageSample@1.0.0",
            ["/data/mnist/data--a1b2c3d4--000000.tar", "/data/mnist/data--a1b2c3d4--000001.tar"],
        )
        == "bafyreifgwr7z3giljni33aitmbeoenyl6phqvybg5abxsldfcc6sgzjvv4"
    )
    assert (
        entry_cid("atdata://local/schema/TextSample@1.0.0", ["s3://bucket/text-{000000..000009}.tar"])
        == "bafyreigi5atcdjodye4556dmt37fifkpetlh3ca5hy25mtf6sqljdbjpwa"
    )


def test_entry_cid_by_hand() -> None:
    """The CID from first principles: DAG-CBOR (keys by length, then bytes), sha256, CIDv1 prefix, base32."""
    import base64
    import hashlib

    ref, urls = "atdata://local/schema/A@1.0.0", ["/x/a.tar"]

    def text(s: str) -> bytes:
        b = s.encode()
        return bytes([0x60 | len(b)]) + b if len(b) < 24 else bytes([0x78, len(b)]) + b

    cbor = b"\xa2" + text("data_urls") + bytes([0x80 | len(urls)]) + b"".join(map(text, urls))
    cbor += text("schema_ref") + text(ref)
    raw = bytes([1, 0x71, 0x12, 0x20]) + hashlib.sha256(cbor).digest()
    assert entry_cid(ref, urls) == "b" + base64.b32encode(raw).decode().lower().rstrip("=")


# ------------------------------------------------------------------------------------------------------------
# the conformance suite (every test below runs on SQLite and on Redis)


def test_insert_get_list(index: Index, tmp_path: Path) -> None:
    ds = atd.write_samples(digits(4), tmp_path / "src" / "train.tar", maxcount=2, progress=False)
    entry = index.insert_dataset(ds, name="digits", description="hand digits", tags=["vision"], license="MIT")
    assert entry.cid == entry_cid(entry.schema_ref, entry.data_urls)
    assert entry.cid.startswith("bafyrei")
    assert entry.schema_ref == "atdata://local/schema/Digit@1.0.0"
    assert entry.data_urls == [ds.url] == [str(tmp_path / "src" / "train-00000{0,1}.tar")]  # the original's form
    assert (entry.description, entry.tags, entry.license) == ("hand digits", ["vision"], "MIT")

    assert index.get_entry(entry.cid) == entry
    assert index.get_dataset("digits").cid == entry.cid
    assert index.get_dataset(entry.cid).name == "digits"
    assert [e.cid for e in index.list_datasets()] == [entry.cid]

    again = index.insert_dataset(ds, name="digits")  # same schema and shards: same id, no duplicate
    assert again.cid == entry.cid
    assert len(index.list_datasets()) == 1

    other = index.insert_dataset(str(tmp_path / "src" / "train-{000000..000001}.tar"), name="digits-pattern",
                                 sample_type=Digit)  # fmt: skip
    assert other.data_urls == [str(tmp_path / "src" / "train-{000000..000001}.tar")]  # kept as one URL
    assert other.cid != entry.cid
    assert {e.name for e in index.list_datasets()} == {"digits", "digits-pattern"}


def test_unknown_names_list_similar_names(index: Index, tmp_path: Path) -> None:
    index.write_samples(digits(2), name="mnist-train", progress=False)
    with pytest.raises(IndexNotFoundError, match=r"mnist-train") as err:
        index.get_dataset("mnist-trian")
    assert isinstance(err.value, KeyError) and isinstance(err.value, IndexStoreError)
    with pytest.raises(IndexNotFoundError, match="versions"):
        index.get_dataset("mnist-train@9.9.9")
    with pytest.raises(IndexNotFoundError):
        index.get_entry("bafyreinothere")
    with pytest.raises(IndexNotFoundError):
        index.label("x", "bafyreinothere")
    with pytest.raises(ValueError, match="invalid dataset name"):
        index.write_samples(digits(1), name="a@b", progress=False)


def test_write_samples_writes_shards_and_checksums(index: Index, tmp_path: Path) -> None:
    import hashlib

    entry = index.write_samples(digits(5), name="digits", maxcount=2, progress=False)
    assert len(entry.data_urls) == 3
    for url in entry.data_urls:
        assert url.startswith(str(tmp_path / "data" / "digits"))
        assert Path(url).name.startswith("data--") and url.endswith(".tar")
        assert entry.metadata is not None
        assert entry.metadata["checksums"][url] == hashlib.sha256(Path(url).read_bytes()).hexdigest()
    assert entry.metadata is not None and entry.metadata["size"]["samples"] == 5
    ds = index.load("digits", Digit, split="train")
    assert [s.label for s in ds] == [0, 1, 2, 3, 4]

    split = index.write_samples({"train": digits(3), "test": digits(2, 100)}, name="splits", progress=False)
    dd = index.load("splits")
    assert isinstance(dd, atd.DatasetDict)
    assert dd.num_samples == {"train": 3, "test": 2}
    assert [s.label for s in dd["test"]] == [100, 101]
    assert split.cid == index.get_dataset("splits").cid

    with pytest.raises(ValueError, match="no samples"):
        index.write_samples([], name="empty", progress=False)
    with pytest.raises(atd.SchemaError, match="not @packable"):
        index.write_samples([{"a": 1}], name="untyped", progress=False)
    with pytest.raises(atd.SchemaError, match="one sample type"):
        index.write_samples([*digits(3), LabelOnly(label=1)], name="mixed", maxcount=1, progress=False)
    assert not list((tmp_path / "data").glob("untyped/*")) and not list((tmp_path / "data").glob("mixed/*"))
    with pytest.raises(IndexNotFoundError):
        index.get_dataset("mixed")


def test_write_splits_takes_any_shard_sink(tmp_path: Path) -> None:
    from atdata_torch.index._write import ShardSink, write_splits

    class ListSink:
        """A sink that keeps samples in memory: a 'shard' per ``maxcount`` samples."""

        opened: ClassVar[list[ListSink]] = []

        def __init__(self, pattern: str, maxcount: int | None, maxsize: int | None) -> None:
            self.pattern, self.maxcount, self.samples, self.shards = pattern, maxcount, [], []
            self.closed = self.aborted = False
            ListSink.opened.append(self)

        def write(self, sample: Any) -> None:
            self.samples.append(sample)
            if self.maxcount and len(self.samples) % self.maxcount == 0:
                self.shards.append(self.pattern % len(self.shards))

        def close(self) -> None:
            self.closed = True

        def abort(self) -> None:
            self.aborted = True

    sink: ShardSink = ListSink("p%d", None, None)  # the protocol is structural
    ListSink.opened.clear()
    written: list[str] = []
    urls, n, sample_type, hints = write_splits(
        {"train": digits(4), "test": digits(2, 100)},
        tmp_path,
        "d",
        written,
        typed=True,
        maxcount=2,
        maxsize=None,
        progress=False,
        open_sink=ListSink,
    )
    assert (n, sample_type) == (6, Digit) and sink.shards == []
    assert [s.pattern for s in ListSink.opened] == [
        str(tmp_path / f"{split}--{Path(urls[0]).name.split('--')[1]}--%06d.tar") for split in ("train", "test")
    ]
    assert all(s.closed and not s.aborted for s in ListSink.opened)
    assert len(urls) == 3 and urls == written
    assert hints.hints["image"].shape is not None
    with pytest.raises(atd.SchemaError, match="one sample type"):
        write_splits(
            {None: [*digits(1), LabelOnly(label=1)]},
            tmp_path,
            "m",
            [],
            typed=True,
            maxcount=None,
            maxsize=None,
            progress=False,
            open_sink=ListSink,
        )
    assert ListSink.opened[-1].aborted


def test_write_samples_into_an_existing_name_or_version_is_an_explicit_choice(index: Index) -> None:
    e1 = index.write_samples(digits(2), name="digits", version="1.0.0", progress=False)
    shards = sorted(p for e in index.list_datasets() for p in e.data_urls)
    with pytest.raises(IndexStoreError, match=r"digits@1\.0\.0 is already in the index.*overwrite=True"):
        index.write_samples(digits(3), name="digits", version="1.0.0", progress=False)
    assert sorted(p for e in index.list_datasets() for p in e.data_urls) == shards  # nothing written
    assert index.get_dataset("digits@1.0.0").cid == e1.cid
    e2 = index.write_samples(digits(3), name="digits", version="2.0.0", progress=False)  # a new version is fine
    e3 = index.write_samples(digits(4), name="digits", version="1.0.0", overwrite=True, progress=False)
    assert index.get_dataset("digits@1.0.0").cid == e3.cid and index.get_dataset("digits@2.0.0").cid == e2.cid
    index.write_samples(digits(1), name="plain", progress=False)
    with pytest.raises(IndexStoreError, match="plain is already in the index"):
        index.write_samples(digits(1, 5), name="plain", progress=False)


def test_labels_versions_and_latest(index: Index) -> None:
    e1 = index.write_samples(digits(2), name="digits", version="1.0.0", progress=False)
    e2 = index.write_samples(digits(3), name="digits", version="2.0.0", progress=False)
    assert index.get_dataset("digits").cid == e2.cid  # newest label
    assert index.get_dataset("digits@1.0.0").cid == e1.cid
    assert index.get_dataset("@local/digits@2.0.0").cid == e2.cid
    assert index.get_dataset("local/digits@1.0.0").cid == e1.cid

    label = index.label("digits", e1.cid, version="3.0.0", description="rollback")
    assert label.version == "3.0.0"
    assert index.get_dataset("digits").cid == e1.cid  # relabeling makes it the newest
    assert index.get_label("digits").version == "3.0.0"
    assert [lb.version for lb in index.list_labels("digits")] == ["3.0.0", "2.0.0", "1.0.0"]

    index.label("digits", e2.cid, version="1.0.0")  # moving an existing version also makes it newest
    assert index.get_dataset("digits@1.0.0").cid == e2.cid
    assert index.get_dataset("digits").cid == e2.cid
    assert index.get_label("digits", "3.0.0").description == "rollback"

    index.label("stable", e1.cid)  # a second name for the same entry
    assert index.get_dataset("stable").cid == e1.cid


def test_search_by_text_tags_and_schema(index: Index) -> None:
    index.write_samples(digits(1), name="mnist", tags=["vision", "digits"], description="handwritten", progress=False)
    index.write_samples(digits(1, 5), name="cifar", tags=["vision"], description="tiny images", progress=False)
    index.write_samples([LabelOnly(label=1)], name="labels-only", tags=["tabular"], progress=False)

    assert [e.name for e in index.search("MNIST")] == ["mnist"]
    assert [e.name for e in index.search("handwritten")] == ["mnist"]  # description
    assert {e.name for e in index.search(tags=["vision"])} == {"mnist", "cifar"}
    assert [e.name for e in index.search("mnist", tags=["vision"])] == ["mnist"]
    assert index.search("mnist", tags=["tabular"]) == []
    assert [e.name for e in index.search(schema=LabelOnly)] == ["labels-only"]
    assert {e.name for e in index.search("digit")} == {"mnist", "cifar"}  # tag text, schema name
    assert len(index.search(limit=1)) == 1


# ---- schemas


@atd.packable
class OptionalFirst:
    caption: str | None = None
    image: NDArray[np.float32] | None = None
    label: int = 0
    mask: NDArray | None = None
    tokens: list[int] | None = None
    raw: bytes = b""
    extra: dict[str, Any] | None = None
    maybe: list[str | None] | None = None


def test_schema_publish_and_rebuild_roundtrip(index: Index) -> None:
    ref = index.publish_schema(OptionalFirst, description="optional fields first")
    assert ref == "atdata://local/schema/OptionalFirst@1.0.0"
    record = index.get_schema(ref)
    assert record["$ref"] == ref and record["description"] == "optional fields first"
    fields = {f["name"]: f for f in record["fields"]}
    assert [f["name"] for f in record["fields"]] == [f.name for f in OptionalFirst.__atdata_fields__]
    assert fields["caption"] == {
        "name": "caption",
        "fieldType": {"$type": "local#primitive", "primitive": "str"},
        "optional": True,
    }
    assert fields["image"]["fieldType"]["dtype"] == "float32"
    assert fields["image"]["fieldType"]["atdataTorch"] == {"dtype": "<f4", "dtypeDeclared": True}
    assert fields["mask"]["fieldType"]["dtype"] == "float32"  # what the original writes for a bare NDArray ...
    assert fields["mask"]["fieldType"]["atdataTorch"]["dtype"] is None  # ... marked unknown
    assert fields["tokens"]["fieldType"] == {
        "$type": "local#array",
        "items": {"$type": "local#primitive", "primitive": "int"},
    }
    assert fields["label"]["optional"] is False

    T = index.get_schema_type(ref)
    assert T is index.get_schema_type(ref)  # cached
    assert T.__name__ == "OptionalFirst"
    assert [(f.name, f.kind, f.optional) for f in T.__atdata_fields__] == [
        (f.name, f.kind, f.optional) for f in OptionalFirst.__atdata_fields__
    ]
    # optional fields in any order: the required ones are positional, the optional ones keyword-only
    t = T(3, b"r")
    assert (t.label, t.raw, t.caption, t.image) == (3, b"r", None, None)
    src = OptionalFirst(
        caption="c",
        image=np.arange(4, dtype=np.float32),
        label=7,
        mask=np.ones((2, 2), np.uint8),
        tokens=[1, 2],
        raw=b"xy",
        extra={"k": 1},
        maybe=["a", None],
    )
    back = T.from_bytes(src.packed)
    assert isinstance(back.image, np.ndarray) and back.image.dtype == np.float32  # optional arrays are arrays
    assert isinstance(back.mask, np.ndarray) and back.mask.dtype == np.uint8
    assert back.to_dict().keys() == src.to_dict().keys()
    assert back.packed == src.packed  # same field order, same bytes
    bad = msgpack.packb({"image": atd.array_to_bytes(np.zeros(2, np.float64)), "label": 1, "raw": b""})
    with pytest.raises(atd.DecodeError):
        T.from_bytes(bad)  # the declared dtype is checked

    assert index.publish_schema(OptionalFirst) == ref  # same fields: same version

    @atd.packable
    class OptionalFirst2:  # another class with the same name but other fields: the next version
        label: int

    OptionalFirst2.__name__ = "OptionalFirst"
    ref2 = index.publish_schema(OptionalFirst2)
    assert ref2 == "atdata://local/schema/OptionalFirst@1.0.1"
    assert index.get_schema("OptionalFirst")["version"] == "1.0.1"
    with pytest.raises(IndexStoreError, match="different fields"):
        index.publish_schema(OptionalFirst2, version="1.0.0")
    assert {r["$ref"] for r in index.list_schemas()} == {ref, ref2}
    with pytest.raises(IndexNotFoundError, match="OptionalFirst"):
        index.get_schema("atdata://local/schema/OptionalFrist@1.0.0")


def test_write_samples_records_observed_dtype_and_shape(index: Index) -> None:
    @atd.packable
    class Bare:
        x: NDArray
        y: NDArray | None = None

    samples = [Bare(x=np.zeros((i + 1, 3), np.uint8), y=np.zeros(2, np.int16)) for i in range(3)]
    entry = index.write_samples(samples, name="bare", progress=False)
    record = index.get_schema(entry.schema_ref)
    x = record["fields"][0]["fieldType"]
    assert (x["dtype"], x["shape"], x["atdataTorch"]) == ("uint8", [None, 3], {"dtype": "|u1", "dtypeDeclared": False})
    T = index.get_schema_type(entry.schema_ref)
    assert T.__atdata_fields__[0].dtype is None  # seen in the data, not declared: not enforced
    loaded = list(index.load("bare", split="train"))
    assert type(loaded[0]) is T and loaded[2].x.shape == (3, 3) and loaded[0].y.dtype == np.int16
    # writing the same class again reuses the schema even though the shapes differ
    again = index.write_samples([Bare(x=np.zeros(5, np.float64))], name="bare2", progress=False)
    assert again.schema_ref == entry.schema_ref


# ---- lenses


def test_store_and_load_code_reference_lens(index: Index) -> None:
    ref = index.store_lens(digit_to_label, name="digit_label", description="keep the label")
    assert ref == "atdata://local/lens/digit_label@1.0.0"
    record = index.get_lens(ref)
    assert record["getter"] == {"kind": "code_reference", "module": __name__, "qualname": "digit_to_label"}
    assert record["putter"] == {"kind": "code_reference", "module": __name__, "qualname": "label_to_digit"}
    assert (record["source_schema"], record["view_schema"]) == ("Digit", "LabelOnly")
    assert index.store_lens(digit_to_label, name="digit_label") == ref  # unchanged: same version

    lens = index.load_lens(ref)
    d = digits(1, 4)[0]
    assert lens(d) == LabelOnly(label=4)
    assert lens.put(LabelOnly(label=9), d).label == 9
    assert [r["$ref"] for r in index.find_lenses(source=Digit, target=LabelOnly)] == [ref]
    assert [r["$ref"] for r in index.find_lenses(source="atdata://local/schema/Digit@1.0.0")] == [ref]
    assert index.find_lenses(target=Digit) == []
    # the schemas of both ends were published with it
    assert {r["name"] for r in index.list_schemas()} >= {"Digit", "LabelOnly"}


def test_lens_loading_never_runs_uninstalled_code(index: Index) -> None:
    record = {
        "name": "evil",
        "version": "1.0.0",
        "source_schema": "Digit",
        "view_schema": "LabelOnly",
        "getter": {"kind": "code_reference", "module": "atdata_torch_not_installed_pkg", "qualname": "get"},
        "putter": {"kind": "opaque"},
    }
    index.store.put_lens("evil", "1.0.0", json.dumps(record))
    with pytest.raises(LensNotFoundError, match=r"atdata_torch_not_installed_pkg.*not installed"):
        index.load_lens("evil")
    assert "atdata_torch_not_installed_pkg" not in sys.modules
    record["getter"] = {"kind": "code_reference", "module": "os; import shutil", "qualname": "x"}
    index.store.put_lens("evil", "1.0.1", json.dumps(record))
    with pytest.raises(LensNotFoundError, match="not a module:qualname"):
        index.load_lens("evil@1.0.1")
    record["getter"] = {"kind": "code_reference", "module": "os.path", "qualname": "no_such_function"}
    index.store.put_lens("evil", "1.0.2", json.dumps(record))
    with pytest.raises(LensNotFoundError, match="no 'no_such_function'"):
        index.load_lens("atdata://local/lens/evil@1.0.2")
    with pytest.raises(IndexStoreError, match="lambda"):
        index.store_lens(atd.Lens(lambda d: LabelOnly(label=d.label), source=Digit, view=LabelOnly), name="anon")


def test_field_mapping_lens_is_rebuilt_without_code(index: Index) -> None:
    lens = FieldMappingLens(Digit, Renamed, {"y": "label"}, name="digit_to_renamed")
    ref = index.store_lens(lens)
    record = index.get_lens(ref)
    assert record["getter"] == {
        "kind": "field_mapping",
        "mappings": [{"source_field": "label", "view_field": "y", "transform": None}],
    }
    assert record["atdataTorch"] == {
        "sourceSchemaRef": "atdata://local/schema/Digit@1.0.0",
        "viewSchemaRef": "atdata://local/schema/Renamed@1.0.0",
    }
    # with the real classes
    real = index.load_lens(ref, source_type=Digit, view_type=Renamed, register=False)
    assert real(digits(1, 6)[0]) == Renamed(y=6)
    # with no classes at all: both ends are rebuilt from the stored schemas
    rebuilt = index.load_lens(ref, register=False)
    Src, View = rebuilt.source_type, rebuilt.view_type
    assert (Src.__name__, View.__name__) == ("Digit", "Renamed") and Src is not Digit
    src = Src.from_bytes(digits(1, 8)[0].packed)
    view = rebuilt(src)
    assert (view.y, view.note) == (8, None)
    assert rebuilt.put(View(y=1), src).label == 1
    assert [r["name"] for r in index.find_lenses(source="Digit", target="Renamed")] == ["digit_to_renamed"]
    with pytest.raises(atd.SchemaError, match="needs"):
        FieldMappingLens(Digit, Renamed, {})


# ---- reading what the original atdata wrote, and being readable by it

ORIGINAL_DDL = """\
CREATE TABLE IF NOT EXISTS dataset_entries (
    cid TEXT PRIMARY KEY, name TEXT NOT NULL, schema_ref TEXT NOT NULL, data_urls BLOB NOT NULL, metadata BLOB,
    legacy_uuid TEXT, created_at TEXT DEFAULT (datetime('now')));
CREATE INDEX IF NOT EXISTS idx_entries_name ON dataset_entries(name);
CREATE TABLE IF NOT EXISTS schemas (name TEXT NOT NULL, version TEXT NOT NULL, schema_json TEXT NOT NULL,
    created_at TEXT DEFAULT (datetime('now')), PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS lenses (name TEXT NOT NULL, version TEXT NOT NULL, lens_json TEXT NOT NULL,
    created_at TEXT DEFAULT (datetime('now')), PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS labels (name TEXT NOT NULL, cid TEXT NOT NULL, version TEXT NOT NULL DEFAULT '',
    description TEXT, created_at TEXT DEFAULT (datetime('now')), PRIMARY KEY (name, version));
CREATE INDEX IF NOT EXISTS idx_labels_cid ON labels(cid);
"""

# What the original's _build_schema_record writes (bare NDArray -> "float32"; NDArray[np.uint8] -> "uint8").
ORIGINAL_SCHEMA = {
    "name": "OrigSample",
    "version": "1.0.0",
    "fields": [
        {"name": "image", "fieldType": {"$type": "local#ndarray", "dtype": "float32"}, "optional": False},
        {"name": "label", "fieldType": {"$type": "local#primitive", "primitive": "str"}, "optional": False},
        {
            "name": "scores",
            "fieldType": {"$type": "local#array", "items": {"$type": "local#primitive", "primitive": "float"}},
            "optional": False,
        },
        {"name": "mask", "fieldType": {"$type": "local#ndarray", "dtype": "uint8"}, "optional": True},
    ],
    "description": None,
    "createdAt": "2025-01-01T00:00:00+00:00",
}


def _original_lens_json(name: str, getter: dict[str, Any], putter: dict[str, Any], view: str = "LabelOnly") -> str:
    return json.dumps(
        {
            "name": name,
            "version": "1.0.0",
            "source_schema": "OrigSample",
            "view_schema": view,
            "getter": getter,
            "putter": putter,
            "created_at": "2025-01-01T00:00:00+00:00",
        }
    )


def _original_shard(path: Path) -> str:
    """A shard as the original writes it (webdataset TarWriter, PAX headers, uuid keys)."""
    import warnings

    import webdataset as wds

    rows = [
        {"image": atd.array_to_bytes(np.full((2, 2), 3, np.uint8)), "label": "a", "scores": [0.5], "mask": None},
        {
            "image": atd.array_to_bytes(np.zeros(3, np.float64)),
            "label": "b",
            "scores": [],
            "mask": atd.array_to_bytes(np.ones(2, np.uint8)),
        },
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with wds.TarWriter(str(path)) as w:
            for i, row in enumerate(rows):
                w.write({"__key__": f"8a1f0c2e-0000-11ee-8000-00000000000{i}", "msgpack": msgpack.packb(row)})
    return str(path)


def _write_like_original(location: str, shard: str) -> str:
    """Write one entry, schema, label and two lenses exactly as the original atdata's providers do."""
    schema_ref = "atdata://local/schema/OrigSample@1.0.0"
    cid = entry_cid(schema_ref, [shard])
    meta = msgpack.packb({"tags": ["legacy"], "description": "written by atdata 0.7"})
    code = {"kind": "code_reference", "module": __name__, "qualname": "orig_to_label"}
    mapping = {
        "kind": "field_mapping",
        "mappings": [{"source_field": "label", "view_field": "label", "transform": None}],
    }
    if is_redis(location):
        r = _redis_client(location)
        data = {"name": "orig", "schema_ref": schema_ref, "data_urls": msgpack.packb([shard]), "cid": cid}
        r.hset(f"LocalDatasetEntry:{cid}", mapping={**data, "metadata": meta})
        r.set("LocalSchema:OrigSample@1.0.0", json.dumps(ORIGINAL_SCHEMA))
        r.set("LocalSchema:oldpkg.samples.Legacy@0.1.0", json.dumps({**ORIGINAL_SCHEMA, "name": "Legacy"}))
        r.hset("Label:orig@1.0.0", mapping={"cid": cid, "name": "orig", "version": "1.0.0"})
        r.set("LocalLens:orig_code@1.0.0", _original_lens_json("orig_code", code, {"kind": "opaque"}))
        r.set("LocalLens:orig_map@1.0.0", _original_lens_json("orig_map", mapping, mapping, "TextLabel"))
        r.close()
        return cid
    conn = sqlite3.connect(location)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(ORIGINAL_DDL)
    conn.execute(
        "INSERT OR REPLACE INTO dataset_entries (cid, name, schema_ref, data_urls, metadata, legacy_uuid) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (cid, "orig", schema_ref, msgpack.packb([shard]), meta, None),
    )
    conn.execute(
        "INSERT OR REPLACE INTO schemas (name, version, schema_json) VALUES (?, ?, ?)",
        ("OrigSample", "1.0.0", json.dumps(ORIGINAL_SCHEMA)),
    )
    conn.execute(
        "INSERT OR REPLACE INTO labels (name, cid, version, description) VALUES (?, ?, ?, ?)",
        ("orig", cid, "1.0.0", None),
    )
    conn.execute(
        "INSERT OR REPLACE INTO lenses (name, version, lens_json) VALUES (?, ?, ?)",
        ("orig_code", "1.0.0", _original_lens_json("orig_code", code, {"kind": "opaque"})),
    )
    conn.execute(
        "INSERT OR REPLACE INTO lenses (name, version, lens_json) VALUES (?, ?, ?)",
        ("orig_map", "1.0.0", _original_lens_json("orig_map", mapping, mapping, "TextLabel")),
    )
    conn.commit()
    conn.close()
    return cid


def orig_to_label(s: Any) -> LabelOnly:
    return LabelOnly(label=len(s.label))


def test_reads_an_index_the_original_wrote(location: str, tmp_path: Path) -> None:
    shard = _original_shard(tmp_path / "orig-000000.tar")
    cid = _write_like_original(location, shard)
    with Index(location, data_dir=tmp_path / "data") as index:
        entry = index.get_dataset("orig")
        assert (entry.cid, entry.data_urls, entry.tags) == (cid, [shard], ["legacy"])
        assert index.get_dataset("@local/orig@1.0.0").cid == cid
        assert [e.name for e in index.search("legacy")] == ["orig"]

        T = index.get_schema_type(entry.schema_ref)
        specs = {f.name: f for f in T.__atdata_fields__}
        assert specs["image"].dtype is None  # the original's "float32" for a bare NDArray means unknown
        assert specs["mask"].dtype == np.dtype(np.uint8) and specs["mask"].optional
        samples = list(index.load("orig", split="train"))
        assert [s.label for s in samples] == ["a", "b"]
        assert samples[0].image.dtype == np.uint8 and samples[1].image.dtype == np.float64
        assert samples[0].mask is None and isinstance(samples[1].mask, np.ndarray)

        lens = index.load_lens("orig_code", source_type=T, view_type=LabelOnly, register=False)
        assert lens(samples[0]) == LabelOnly(label=1)
        mapped = index.load_lens("atdata://local/lens/orig_map@1.0.0", view_type=TextLabel, register=False)
        assert mapped.source_type is T  # rebuilt from the original's schema, no code
        assert mapped(samples[1]) == TextLabel(label="b")
        assert [r["name"] for r in index.find_lenses(source="OrigSample")] == ["orig_code", "orig_map"]
        if is_redis(location):  # a legacy "module.Class" schema key
            assert index.get_schema("local://schemas/oldpkg.samples.Legacy@0.1.0")["name"] == "Legacy"

        # labels the original wrote have no created_at in Redis: ours are newer
        ours = index.write_samples(digits(1), name="orig", version="2.0.0", progress=False)
        assert index.get_dataset("orig").cid == ours.cid

        if is_redis(location):  # the original writes after we opened the database: still found
            r = _redis_client(location)
            data = {"name": "late", "schema_ref": entry.schema_ref, "data_urls": msgpack.packb([shard]), "cid": "c"}
            r.hset("LocalDatasetEntry:bafyreilate", mapping=data)
            r.hset("Label:late-label@1.0.0", mapping={"cid": cid, "name": "late-label", "version": "1.0.0"})
            r.close()
            assert index.get_dataset("late").name == "late"
            assert index.get_dataset("late-label").cid == cid


def test_the_original_can_read_what_we_write(location: str, tmp_path: Path) -> None:
    with Index(location, data_dir=tmp_path / "data") as index:
        entry = index.write_samples(digits(2), name="ours", version="1.0.0", tags=["t"], progress=False)
        index.label("ours", entry.cid, version="1.1.0", description="d")
        index.store_lens(digit_to_label, name="dl")
    # the original's reads, statement for statement (providers/_sqlite.py, providers/_redis.py)
    if is_redis(location):
        r = _redis_client(location)
        raw = r.hgetall(f"LocalDatasetEntry:{entry.cid}")
        assert raw[b"name"] == b"ours" and raw[b"schema_ref"] == entry.schema_ref.encode()
        assert msgpack.unpackb(raw[b"data_urls"]) == entry.data_urls
        assert msgpack.unpackb(raw[b"metadata"])["tags"] == ["t"]
        assert r.hgetall("Label:ours@1.1.0")[b"cid"] == entry.cid.encode()
        assert r.hgetall("Label:ours@1.1.0")[b"description"] == b"d"
        schema_json = r.get("LocalSchema:Digit@1.0.0")
        lens_json = r.get("LocalLens:dl@1.0.0")
        assert sorted(k.decode() for k in r.scan_iter(match="LocalDatasetEntry:*")) == [
            f"LocalDatasetEntry:{entry.cid}"
        ]
        r.close()
    else:
        conn = sqlite3.connect(location)
        row = conn.execute(
            "SELECT cid, name, schema_ref, data_urls, metadata, legacy_uuid FROM dataset_entries WHERE cid = ?",
            (entry.cid,),
        ).fetchone()
        assert row[1] == "ours" and msgpack.unpackb(row[3]) == entry.data_urls
        assert msgpack.unpackb(row[4])["tags"] == ["t"]
        latest = conn.execute(
            "SELECT cid, version FROM labels WHERE name = ? ORDER BY created_at DESC, rowid DESC LIMIT 1", ("ours",)
        ).fetchone()
        assert latest == (entry.cid, "1.1.0")
        schema_json = conn.execute("SELECT schema_json FROM schemas WHERE name = 'Digit'").fetchone()[0]
        lens_json = conn.execute("SELECT lens_json FROM lenses WHERE name = 'dl'").fetchone()[0]
        conn.close()
    schema = json.loads(schema_json)
    assert {"name", "version", "fields", "description", "createdAt"} <= schema.keys()
    for f in schema["fields"]:  # what the original's _schema_to_type reads
        assert {"name", "fieldType", "optional"} <= f.keys() and "#" in f["fieldType"]["$type"]
    assert schema["fields"][0]["fieldType"]["$type"] == "local#ndarray"
    assert schema["fields"][0]["fieldType"]["dtype"] == "uint8"
    lens = json.loads(lens_json)
    assert lens["getter"]["kind"] == "code_reference" and lens["source_schema"] == "Digit"


# ---- concurrency


def _concurrent_writer(location: str, data_dir: str, proc: int, n: int) -> None:
    idx = Index(location, data_dir=data_dir)
    for i in range(n):
        entry = idx.insert_dataset([f"/data/p{proc}/shard-{i}.tar"], name="shared", sample_type=Digit,
                                   version=f"{proc}.{i}.0")  # fmt: skip
        idx.label(f"proc{proc}", entry.cid, version=str(i))
    evolving = atd.packable(type("Evolving", (), {"__annotations__": {f"field{proc}": int}}))
    idx.publish_schema(evolving)
    idx.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_eight_concurrent_writers_lose_nothing(location: str, tmp_path: Path) -> None:
    Index(location).close()  # create the database first, as a user would
    ctx = multiprocessing.get_context("fork")
    n = 12
    procs = [ctx.Process(target=_concurrent_writer, args=(location, str(tmp_path), p, n)) for p in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    with Index(location) as index:
        entries = index.list_datasets()
        assert len(entries) == 8 * n and {e.name for e in entries} == {"shared"}
        assert len(index.store.entries_named("shared")) == 8 * n
        assert len(index.list_labels("shared")) == 8 * n
        for p in range(8):
            assert sorted(int(lb.version or -1) for lb in index.list_labels(f"proc{p}")) == list(range(n))
            assert index.get_dataset(f"shared@{p}.{n - 1}.0").data_urls == [f"/data/p{p}/shard-{n - 1}.tar"]
        assert sorted(index.store.schema_versions("Evolving")) == [f"1.0.{i}" for i in range(8)]
        assert index.store.schema_versions("Digit") == ["1.0.0"]  # every writer reused the first one
        fields = {index.get_schema(f"Evolving@1.0.{i}")["fields"][0]["name"] for i in range(8)}
        assert fields == {f"field{p}" for p in range(8)}


# ---- load_dataset


def test_load_dataset_at_local(location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Index(location, data_dir=tmp_path / "data") as index:
        e1 = index.write_samples(digits(10), name="digits", version="1.0.0", maxcount=4, progress=False)
        index.write_samples(digits(3, 100), name="digits", version="2.0.0", progress=False)

        ds = atd.load_dataset("@local/digits", split="train", index=index)
        assert [s.label for s in ds] == [100, 101, 102]  # latest version
        assert type(ds.head(1)[0]).__name__ == "Digit"  # rebuilt from the schema, no class needed
        typed = atd.load_dataset("@local/digits@1.0.0", Digit, split="train[:50%]", index=index)
        assert [s.label for s in typed] == [0, 1, 2, 3, 4] and isinstance(typed.head(1)[0], Digit)
        dd = atd.load_dataset("@local/digits@1.0.0", index=location)
        assert isinstance(dd, atd.DatasetDict) and dd.num_samples == {"train": 10}
        assert len(atd.load_dataset("@local/digits@1.0.0", split="train", index=index).list_shards()) == 3

    monkeypatch.setenv("ATDATA_TORCH_INDEX", location)  # the default index: bare names work too
    monkeypatch.chdir(tmp_path)
    assert len(atd.load_dataset("digits", split="train")) == 3
    assert len(atd.load_dataset("digits@1.0.0", split="train")) == 10
    assert atd.load_dataset("@local/digits@1.0.0", split="train").list_shards() == e1.data_urls
    with pytest.raises(ShardNotFoundError, match="similar names: digits"):
        atd.load_dataset("digitz", split="train")
    with pytest.raises(IndexNotFoundError, match="similar names: digits"):
        atd.load_dataset("@local/digitz")
    with pytest.raises(atd.SplitError):
        atd.load_dataset("@local/digits", split="test")


def test_load_dataset_bare_name_without_an_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ShardNotFoundError, match="no index"):
        atd.load_dataset("nothing-here")
    assert not (tmp_path / "xdg" / "atdata-torch" / "index.db").exists()  # a typo creates no index


# ------------------------------------------------------------------------------------------------------------
# locations, backends, dependencies


def test_default_locations_follow_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Index() as index:
        assert index.location == str(tmp_path / "xdg" / "atdata-torch" / "index.db")
        assert index.data_dir == tmp_path / "xdg" / "atdata-torch" / "data"
    monkeypatch.setenv("ATDATA_TORCH_INDEX", str(tmp_path / "team" / "idx.db"))
    monkeypatch.setenv("ATDATA_TORCH_DATA_DIR", str(tmp_path / "shards"))
    with atd.Index() as index:
        assert index.location == str(tmp_path / "team" / "idx.db")
        entry = index.write_samples(digits(1), name="d", progress=False)
        assert entry.data_urls[0].startswith(str(tmp_path / "shards" / "d"))
    with Index(f"sqlite://{tmp_path / 'other.db'}", data_dir=tmp_path / "x") as index:
        assert index.location == str(tmp_path / "other.db") and index.data_dir == tmp_path / "x"
    assert (tmp_path / "team" / "idx.db").exists()
    mode = sqlite3.connect(tmp_path / "team" / "idx.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_missing_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` fail
    with pytest.raises(MissingDependencyError, match=r"atdata-torch\[redis\]") as err:
        Index("redis://127.0.0.1:6379/0")
    assert isinstance(err.value, ImportError)


def test_unreachable_redis_is_an_index_store_error() -> None:
    pytest.importorskip("redis")
    with pytest.raises(IndexStoreError, match=r"127\.0\.0\.1"):
        Index(f"redis://127.0.0.1:{_free_port()}/0")


def test_importing_the_package_does_not_import_the_index() -> None:
    code = (
        "import sys, atdata_torch as atd\n"
        "print([m for m in ('atdata_torch.index', 'redis') if m in sys.modules])\n"
        "atd.Index\n"
        "print('atdata_torch.index' in sys.modules, 'redis' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True False"]


@pytest.mark.integration
def test_redis_lookups_by_name_do_not_scan(redis_server: str, tmp_path: Path) -> None:
    client = _redis_client(redis_server)
    client.flushall()
    with Index(redis_server, data_dir=tmp_path) as index:
        for i in range(60):
            index.insert_dataset([f"/d/{i}.tar"], name=f"ds{i}", sample_type=Digit, version="1.0.0")
        client.config_resetstat()
        assert index.get_dataset("ds42").data_urls == ["/d/42.tar"]
        assert index.get_dataset("ds7@1.0.0").data_urls == ["/d/7.tar"]
        assert index.store.entries_named("ds13")[0].name == "ds13"
        stats = client.info("commandstats")
    client.close()
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    assert "scan" not in calls and "keys" not in calls
    assert sum(calls.values()) <= 12, calls


def test_rebuilt_types_pickle_as_their_record() -> None:
    import pickle
    import subprocess
    import sys

    from atdata_torch.index import build_schema_record, type_from_record

    @atd.packable
    class Shipped:
        x: atd.NDArray[np.int16]
        name: str

    rec = build_schema_record(Shipped, version="1.0.0")
    rec["name"] = "ShippedElsewhere"
    T = type_from_record(rec)
    assert pickle.loads(pickle.dumps(T)) is T  # the same class in the same process
    blob = pickle.dumps(T(x=np.arange(3, dtype=np.int16), name="a"))
    code = "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); print(type(s).__name__, s.x.dtype, s.name)"
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True, timeout=120)
    assert out.stdout.decode().split() == ["ShippedElsewhere", "int16", "a"]  # rebuilt in a fresh process
