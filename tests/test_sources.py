"""One conformance suite for every built-in source (memory, local, HTTP on a real server, S3 on moto), and the
scheme registry (custom schemes, the ``gopen`` fallback, mixed schemes)."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from http_server import FaultServer
from remote_data import FORK_WITH_THREADS, MOTO_ACCESS_KEY, MOTO_SECRET_KEY, Rec, rows, write_shards

import atdata_torch as atd
from atdata_torch.sources import (
    ConcatSource,
    DataSource,
    LocalSource,
    MemorySource,
    URLSource,
    _registry,
    register_source,
    resolve_source,
    source_for_urls,
)
from atdata_torch.sources.http import HTTPSource
from atdata_torch.sources.s3 import S3Source

HTTP_PASSWORD = "pw-Secret-99"


@dataclass
class Case:
    """A source over the same three shards (the last one without a sidecar), and what it should give."""

    kind: str
    src: Any
    ids: list[str]  # the shard identifiers, in order
    files: list[Path]  # the local files with the same bytes
    missing: str  # an identifier of a shard that does not exist there
    secret: str | None  # must never be shown


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = write_shards(tmp_path / "www", n=12, per_shard=4)
    Path(str(paths[-1]) + ".idx.json").unlink()
    return paths


@pytest.fixture
def local(files: list[Path]) -> atd.Dataset[Rec]:
    return atd.Dataset[Rec]([str(p) for p in files])


@pytest.fixture(params=["memory", "local", "http", pytest.param("s3", marks=pytest.mark.integration)])
def case(request: pytest.FixtureRequest, files: list[Path]) -> Case:
    kind = request.param
    if kind == "memory":
        data: dict[str, bytes] = {}
        for p in files:
            data[p.name] = p.read_bytes()
            side = Path(str(p) + ".idx.json")
            if side.exists():
                data[p.name + ".idx.json"] = side.read_bytes()
        return Case(kind, MemorySource(data), [p.name for p in files], files, "nope.tar", None)
    if kind == "local":
        ids = [str(p) for p in files]
        return Case(kind, LocalSource(ids), ids, files, str(files[0].parent / "nope.tar"), None)
    if kind == "http":
        srv = FaultServer(files[0].parent).start()
        request.addfinalizer(srv.close)
        srv.require_auth("user", HTTP_PASSWORD)
        ids = [srv.url(p.name, auth=f"user:{HTTP_PASSWORD}") for p in files]
        src = HTTPSource(ids, timeout=5.0, retries=1, backoff=0.01)
        return Case(kind, src, ids, files, srv.url("nope.tar", auth=f"user:{HTTP_PASSWORD}"), HTTP_PASSWORD)
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_upload")(files, prefix="shards/")
    ids = [f"s3://{bucket}/shards/{p.name}" for p in files]
    src = S3Source.from_urls(
        ids, endpoint=endpoint, access_key=MOTO_ACCESS_KEY, secret_key=MOTO_SECRET_KEY, retries=1, backoff=0.01
    )
    return Case(kind, src, ids, files, f"s3://{bucket}/shards/nope.tar", MOTO_SECRET_KEY)


# ---------------------------------------------------------------------------------------------------- conformance
def test_is_a_data_source(case: Case) -> None:
    assert isinstance(case.src, DataSource)


def test_list_shards_in_order(case: Case) -> None:
    assert case.src.list_shards() == case.ids
    # .shards is the original atdata's (id, stream) pairs, opened one at a time
    pairs = list(case.src.shards)
    try:
        assert [shard for shard, _ in pairs] == case.ids
        assert pairs[0][1].read() == case.files[0].read_bytes()
    finally:
        for _, stream in pairs:
            stream.close()
    assert len(case.src) == 3


def test_open_shard_gives_the_same_bytes(case: Case) -> None:
    for shard, path in zip(case.ids, case.files, strict=True):
        with case.src.open_shard(shard) as f:
            assert f.read() == path.read_bytes()


def test_buffer_gives_the_same_bytes(case: Case) -> None:
    for shard, path in zip(case.ids, case.files, strict=True):
        buf = case.src.buffer(shard)
        assert buf is not None
        assert bytes(buf) == path.read_bytes()


def test_read_sidecar_present_and_absent(case: Case) -> None:
    for shard, path in zip(case.ids[:2], case.files[:2], strict=True):
        assert case.src.read_sidecar(shard) == Path(str(path) + ".idx.json").read_bytes()
    assert case.src.read_sidecar(case.ids[2]) is None


def test_missing_shard_raises_shard_not_found(case: Case) -> None:
    for read in (case.src.open_shard, case.src.buffer):
        with pytest.raises(atd.ShardNotFoundError, match=r"nope\.tar") as info:
            read(case.missing)
        assert isinstance(info.value, FileNotFoundError)
        if case.secret:
            assert case.secret not in str(info.value)


def test_dataset_over_the_source(case: Case, local: atd.Dataset[Rec]) -> None:
    ds = atd.Dataset[Rec](case.src)
    assert ds.source is case.src
    assert len(ds) == 12
    assert rows(ds.ordered()) == rows(local.ordered())
    assert rows(ds.shuffled(batch_size=5, seed=1)) == rows(local.shuffled(batch_size=5, seed=1))


def test_pickle_round_trip(case: Case) -> None:
    case.src.buffer(case.ids[0])  # whatever per-process state there is (connections, clients) exists now
    copy = pickle.loads(pickle.dumps(case.src))
    assert copy.list_shards() == case.ids
    assert bytes(copy.buffer(case.ids[1])) == case.files[1].read_bytes()


@FORK_WITH_THREADS
def test_dataloader_workers(case: Case, local: atd.Dataset[Rec]) -> None:
    ds = atd.Dataset[Rec](case.src)
    got = rows(ds.loader(batch_size=3, shuffle=False, num_workers=2, multiprocessing_context="fork"))
    assert sorted(got) == sorted(rows(local.ordered()))


def test_repr_is_informative_and_has_no_secret(case: Case) -> None:
    shown = [repr(case.src), str(case.src), repr(atd.Dataset[Rec](case.src))]
    assert type(case.src).__name__ in shown[0]
    assert "3" in shown[0]  # the number of shards
    if case.secret:
        for text in shown:
            assert case.secret not in text


# ---------------------------------------------------------------------------------------------------- registry
class EchoSource(LocalSource):
    """A custom scheme: ``echo:///abs/path.tar`` reads the local file (records the options it was given)."""

    def __init__(self, paths: list[str], options: dict[str, Any]) -> None:
        super().__init__(paths)
        self.options = options

    @classmethod
    def from_urls(cls, urls: list[str], **options: Any) -> EchoSource:  # type: ignore[override]
        return cls([u.split("://", 1)[1] for u in urls], options)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The scheme registry, restored after the test."""
    reg = dict(_registry._REGISTRY)
    monkeypatch.setattr(_registry, "_REGISTRY", reg)
    return reg


@pytest.mark.parametrize("how", ["class", "string"])
def test_register_source(registry: dict[str, Any], files: list[Path], local: atd.Dataset[Rec], how: str) -> None:
    register_source("ECHO", EchoSource if how == "class" else f"{__name__}:EchoSource")
    assert registry["echo"] == f"{__name__}:EchoSource"
    ds = atd.Dataset[Rec](f"echo://{files[0].parent}/data-{{000000..000002}}.tar", flavour="mint")
    assert isinstance(ds.source, EchoSource)
    assert ds.source.options == {"flavour": "mint"}
    assert ds.list_shards() == [str(p) for p in files]
    assert rows(ds.ordered()) == rows(local.ordered())


def test_registered_target_must_be_a_class(registry: dict[str, Any]) -> None:
    register_source("weird", f"{__name__}:HTTP_PASSWORD")
    with pytest.raises(TypeError, match="is not a class"):
        source_for_urls(["weird://x.tar"])


def test_unknown_scheme_falls_back_to_gopen(files: list[Path], local: atd.Dataset[Rec]) -> None:
    ds = atd.Dataset[Rec](f"pipe:cat {files[0].parent}/data-{{000000..000002}}.tar")
    assert isinstance(ds.source, URLSource)
    assert ds.list_shards() == [f"pipe:cat {p}" for p in files]
    assert ds.source.buffer(ds.list_shards()[0]) is None  # streaming only
    assert rows(ds.ordered()) == rows(local.ordered())
    assert isinstance(source_for_urls(["gs://bucket/a.tar"]), URLSource)


def test_mixed_schemes_give_a_concat_source(
    http_server: FaultServer, files: list[Path], local: atd.Dataset[Rec]
) -> None:
    for p in files[1:]:
        (http_server.root / p.name).write_bytes(p.read_bytes())
    urls = [str(files[0]), http_server.url(files[1].name), http_server.url(files[2].name)]
    # BUG (fixed): remote options made the local part raise "options ... do not apply to local files".
    ds = atd.Dataset[Rec](urls, readahead=1, retries=2)
    assert isinstance(ds.source, ConcatSource)
    assert [type(s) for s in ds.source.sources] == [LocalSource, HTTPSource]
    assert ds.list_shards() == urls
    assert "LocalSource" in repr(ds.source) and "HTTPSource" in repr(ds.source)
    # Read-ahead is passed on to the sources that do it.
    ds.source.prefetch(urls)
    assert http_server.wait_for(lambda: http_server.gets(files[1].name) == 1)
    assert rows(ds.ordered()) == rows(local.ordered())
    assert ds.source.read_sidecar(urls[0]) == Path(str(files[0]) + ".idx.json").read_bytes()
    assert ds.source.read_sidecar(urls[2]) is None


def test_concat_source_rejects_duplicate_shards(files: list[Path]) -> None:
    a = LocalSource([str(files[0])])
    with pytest.raises(ValueError, match="appears in two"):
        ConcatSource([a, LocalSource([str(files[0]), str(files[1])])])


def test_options_that_do_not_apply(files: list[Path]) -> None:
    with pytest.raises(TypeError, match="do not apply to local files"):
        atd.Dataset(str(files[0]), headers={"a": "b"})
    with pytest.raises(TypeError, match="source's constructor"):
        resolve_source(LocalSource([str(files[0])]), retries=3)
    with pytest.raises(TypeError, match="URL string, a list of URLs, or a DataSource"):
        resolve_source(42)  # type: ignore[arg-type]


def test_cache_options_build_a_shared_cache(tmp_path: Path) -> None:
    src = source_for_urls(["http://127.0.0.1:9/a.tar"], cache_dir=str(tmp_path / "c"), cache_max_bytes=1234)
    assert isinstance(src, HTTPSource) and src.cache is not None
    assert (src.cache.root, src.cache.max_bytes) == (tmp_path / "c", 1234)


def test_empty_url_list_is_an_empty_source() -> None:
    src = source_for_urls([])
    assert src.list_shards() == []


# ---------------------------------------------------------------------------------------------------- Filling
def test_filling_hands_over_bytes_as_they_arrive() -> None:
    import threading

    from atdata_torch.sources import Filling

    fill = Filling(memoryview(bytearray(10)), "a.tar")
    waited = threading.Event()

    def reader() -> None:
        fill.wait(6)
        waited.set()

    t = threading.Thread(target=reader)
    t.start()
    fill.view[:4] = b"abcd"
    fill.advance(4)
    assert not waited.wait(0.1)  # 4 of the 6 bytes it needs
    fill.view[4:8] = b"efgh"
    fill.advance(8)
    assert waited.wait(5)
    t.join()
    fill.finish()
    assert fill.done and fill.filled == 10
    fill.wait(10)
    with pytest.raises(atd.ShardFormatError, match="has 10 bytes") as info:
        fill.wait(11)
    assert info.value.shard == "a.tar"
    assert repr(fill) == "Filling('a.tar', 10/10 bytes, done)"


def test_filling_passes_the_download_error_to_waiters() -> None:
    from atdata_torch.sources import Filling

    fill = Filling(memoryview(bytearray(10)), "a.tar")
    fill.advance(3)
    fill.finish(atd.SourceError("download of 'a.tar' failed", shard="a.tar"))
    fill.wait(3)  # what arrived stays readable
    with pytest.raises(atd.SourceError, match="failed"):
        fill.wait(4)


def test_segmented_filling_slices_like_one_buffer() -> None:
    from atdata_torch.sources import Filling

    data = bytes(range(256)) * 4  # 1024 bytes in segments of 100: the last one is short
    fill = Filling.segmented(len(data), 100, "a.tar")
    assert len(fill) == 1024 and fill.view is None
    for k in range(11):
        seg = memoryview(bytearray(100))
        chunk = data[k * 100 : (k + 1) * 100]
        seg[: len(chunk)] = chunk
        fill.put(k, seg)
    fill.advance(1024)
    within = fill[210:290]
    assert bytes(within) == data[210:290]
    assert within.obj is not None and len(within.obj) == 100  # a view of its segment: no copy
    for a, b in [(0, 1024), (95, 105), (199, 401), (1000, 1024), (300, 300), (-24, 1024)]:
        assert bytes(fill[a:b]) == data[a:b], (a, b)  # across segments: copied in order
    assert bytes(fill.contiguous()) == data
    assert "segments of 100" in repr(fill)


def test_segmented_filling_lets_go_of_the_segments_a_reader_passed() -> None:
    import gc
    import weakref

    import numpy as np

    from atdata_torch.sources import Filling

    fill = Filling.segmented(300, 100, "a.tar")
    arrays = [np.full(100, k, np.uint8) for k in range(3)]
    refs = [weakref.ref(a) for a in arrays]
    for k, a in enumerate(arrays):
        fill.put(k, memoryview(a))  # type: ignore[arg-type]
    fill.finish()
    del arrays, a
    held = fill[150:160]  # a record the reader still holds keeps its segment
    fill.drop_before(250)  # the reader is at byte 250: segments 0 and 1 end before it
    gc.collect()
    assert [r() is None for r in refs] == [True, False, False]
    assert bytes(held) == bytes([1] * 10)
    del held
    gc.collect()
    assert refs[1]() is None and refs[2]() is not None
    assert bytes(fill[250:300]) == bytes([2] * 50)


def test_segmented_filling_waits_and_fails_like_one_buffer() -> None:
    from atdata_torch.sources import Filling

    fill = Filling.segmented(10, 4, "a.tar")
    fill.put(0, memoryview(bytearray(b"abcd")))
    fill.advance(4)
    fill.finish(atd.SourceError("download of 'a.tar' failed", shard="a.tar"))
    fill.wait(4)
    assert bytes(fill[0:4]) == b"abcd"
    with pytest.raises(atd.SourceError, match="failed"):
        fill.wait(5)
    with pytest.raises(atd.SourceError, match="failed"):
        fill.contiguous()
    with pytest.raises(atd.ShardFormatError, match="has 10 bytes"):
        fill.wait(11)


# ---------------------------------------------------------------------------------------------------- bad bytes
def _rot(path: Path) -> None:
    """Flip one bit inside the last sample's array data: the tar and the payload stay valid, the bytes are wrong."""
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * 0.3)] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("kind", ["local", "http"])
@pytest.mark.parametrize(
    "read",
    [
        lambda ds: list(ds),
        lambda ds: list(ds.ordered(batch_size=3)),
        lambda ds: list(ds.shuffled(batch_size=3, seed=1)),
        lambda ds: list(ds.loader(batch_size=2, num_workers=2)),
    ],
    ids=["iter", "ordered", "shuffled", "loader-2-workers"],
)
def test_checksums_true_catches_bit_rot(files: list[Path], kind: str, read: Any) -> None:
    _rot(files[1])
    if kind == "http":
        srv = FaultServer(files[0].parent).start()
        try:
            urls = [srv.url(p.name) for p in files]
            ds = atd.Dataset[Rec](urls, checksums=True, retries=0)
            with pytest.raises(atd.ChecksumError, match=files[1].name):
                read(ds)
        finally:
            srv.close()
        return
    with pytest.raises(atd.ChecksumError, match=files[1].name):
        read(atd.Dataset[Rec]([str(p) for p in files], checksums=True))
    # Without checksums=, bit-rot inside array data cannot be seen: the samples decode (this is why the option exists).
    assert len(list(atd.Dataset[Rec]([str(p) for p in files]))) == 12


def test_checksums_option_is_checked() -> None:
    with pytest.raises(TypeError, match="checksums= takes True"):
        LocalSource(["a.tar"], checksums="yes")  # type: ignore[arg-type]


_TRUNCATE_DURING_A_PASS = """
import os, sys
import atdata_torch as atd
from remote_data import Rec
paths, workers = sys.argv[1:-1], int(sys.argv[-1])
ds = atd.Dataset[Rec](paths)
seen = 0
try:
    it = ds.ordered() if workers == 0 else ds.loader(batch_size=1, num_workers=workers, collate_fn=None)
    for i, s in enumerate(it):
        seen += 1
        if i == 0:
            for p in paths:
                os.truncate(p, 1024)
except atd.ShardFormatError as exc:
    print("NAMED", type(exc).__name__, exc); sys.exit(0)
print("READ", seen)
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_truncated_during_a_pass_is_a_named_error(files: list[Path], workers: int) -> None:
    # A mapped file that shrinks kills the reader with SIGBUS; bytes read into memory cannot change under it. Run in a
    # subprocess, so that a crash is a failed test rather than a dead test run.
    import subprocess
    import sys

    tests_dir = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", _TRUNCATE_DURING_A_PASS, *[str(p) for p in files], str(workers)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": tests_dir + ":" + str(Path(tests_dir).parent)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # Either the pass had every byte in memory already (all 12 samples), or a shard it opened later is named.
    assert out.stdout.startswith(("NAMED ShardFormatError", "READ 12")), out.stdout + out.stderr[-2000:]
    if out.stdout.startswith("NAMED"):
        assert "data-00000" in out.stdout


# ---------------------------------------------------------------------------------------------------- local placement
WIDE = 1 << 15  # float32: 128 KiB arrays, which an ordered pass in batches places (see atdata_torch._placement)


def _placed_pass(paths: list[Path], **kw: Any) -> list[Any]:
    return list(atd.Dataset[Rec]([str(p) for p in paths], **kw).ordered(batch_size=3))


def _array_byte(path: Path, sample: int) -> int:
    """An offset inside the array data of a sample of a shard."""
    ix = atd.Dataset[Rec](str(path)).shard_indexes()[0]
    assert ix.payload_offsets is not None
    return ix.payload_offsets[sample] + 100 + 4 * (WIDE // 2)


def test_a_local_shard_truncated_between_index_and_read_is_named(tmp_path: Path) -> None:
    paths = write_shards(tmp_path, "wide", n=12, per_shard=4, width=WIDE)
    want = rows(_placed_pass(paths))
    ds = atd.Dataset[Rec]([str(p) for p in paths])
    ds.shard_indexes()  # the pass lays out its order (and its routes) from these
    os.truncate(paths[1], _array_byte(paths[1], 2))  # inside the third sample's array
    with pytest.raises(atd.ShardFormatError, match=paths[1].name) as info:
        list(ds.ordered(batch_size=3))
    assert info.value.shard == str(paths[1])
    with pytest.warns(atd.SkippedSamplesWarning):
        got = rows(ds.ordered(batch_size=3, on_error="skip"))
    assert got == want[:6] + want[8:]  # the samples the shard still holds were placed; the two cut off are counted


def test_a_local_shard_that_shrinks_while_it_is_placed_is_named(tmp_path: Path) -> None:
    from atdata_torch._placement import Placement, learn

    paths = write_shards(tmp_path, "wide", n=8, per_shard=8, width=WIDE)
    ix = atd.Dataset[Rec](str(paths[0])).shard_indexes()[0]
    p, n = ix.payload_offsets[0], ix.payload_sizes[0]  # type: ignore[index]
    layout = learn(paths[0].read_bytes()[p : p + n], {s.name: s for s in Rec.__atdata_fields__})
    assert layout is not None
    cut = _array_byte(paths[0], 5)

    class Shrinking(Placement):
        """Another process truncates the file while the read is under way (when its first row is handed out)."""

        def dest(self, j: int, r: int) -> memoryview:
            if os.path.getsize(paths[0]) > cut:
                os.truncate(paths[0], cut)
            return super().dest(j, r)

    placement = Shrinking()
    placement.plan(layout, [np.arange(0, 4), np.arange(4, 8)], 0, np.zeros(8, np.int64), np.arange(8), [ix])
    src = LocalSource([str(paths[0])])
    src.route(str(paths[0]), placement.routers[0])
    with pytest.raises(atd.ShardFormatError, match="changed size while it was read") as info:
        src.stream_buffer(str(paths[0]), placement)
    assert info.value.shard == str(paths[0])


@pytest.mark.parametrize("small_reads", [False, True])
def test_checksums_true_hashes_the_bytes_a_local_pass_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_reads: bool
) -> None:
    from atdata_torch.sources import local as local_mod

    if small_reads:  # reads that end inside arrays and between them, and calls of few buffers
        monkeypatch.setattr(local_mod, "_CHUNK", 100_003)
        monkeypatch.setattr(local_mod, "_IOV_MAX", 3)
    paths = write_shards(tmp_path, "wide", n=12, per_shard=4, width=WIDE)
    want = rows(atd.Dataset[Rec]([str(p) for p in paths]).ordered())
    got = _placed_pass(paths, checksums=True)
    assert rows(got) == want
    base = np.asarray(got[1].x).base
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview)  # placed: a pooled batch array, not a stacked copy
    raw = bytearray(paths[1].read_bytes())
    raw[_array_byte(paths[1], 2)] ^= 0x10  # a flipped bit in a placed row: the tar and the payload stay valid
    paths[1].write_bytes(bytes(raw))
    with pytest.raises(atd.ChecksumError, match=paths[1].name):
        _placed_pass(paths, checksums=True)
    assert len(rows(_placed_pass(paths))) == 12  # unseen without checksums=


def test_a_local_source_with_routes_pickles_without_them(tmp_path: Path) -> None:
    from atdata_torch._placement import Placement, Router

    paths = write_shards(tmp_path, "wide", n=4, per_shard=4, width=WIDE)
    src = LocalSource([str(p) for p in paths])
    owner = Placement()
    z = np.zeros(1, np.int64)
    src.route(str(paths[0]), Router(owner, z, z + 1, z, z, z))
    copy = pickle.loads(pickle.dumps(src))
    assert copy._routes == {} and copy.list_shards() == src.list_shards()
    assert bytes(copy.stream_buffer(str(paths[0]), owner)) == paths[0].read_bytes()  # no route: read whole
    src.unroute(owner)
    assert src._routes == {}
