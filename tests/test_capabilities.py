"""The optional source capabilities (``atdata_torch.sources._capabilities``): which source has which, with the
protocol's exact signature, and how ConcatSource asks its members for them."""

from __future__ import annotations

import inspect
import io
from pathlib import Path
from typing import IO, Any

import pytest
from remote_data import Rec, rows, write_shards

import atdata_torch as atd
from atdata_torch.atmosphere._blobs import BlobSource
from atdata_torch.sources import ConcatSource, DataSource, LocalSource, MemorySource, ShardSource, URLSource
from atdata_torch.sources._capabilities import (
    Buffered,
    Prefetching,
    RangeReading,
    Routing,
    SidecarBatching,
    SidecarReading,
    Streaming,
)
from atdata_torch.sources._remote import RemoteSource
from atdata_torch.sources.http import HTTPSource
from atdata_torch.sources.s3 import S3Source

CAPABILITIES = [Buffered, Streaming, RangeReading, Prefetching, SidecarBatching, SidecarReading, Routing]
REMOTE = set(CAPABILITIES)

# What each source class can do. Every ShardSource is Buffered (its buffer() may answer None) and reads sidecars.
HAS: dict[type, set[type]] = {
    ShardSource: {Buffered, SidecarReading},
    MemorySource: {Buffered, SidecarReading},
    URLSource: {Buffered, SidecarReading},
    LocalSource: {Buffered, Streaming, RangeReading, SidecarReading, Routing},
    ConcatSource: {Buffered, Streaming, Prefetching, SidecarBatching, SidecarReading},
    RemoteSource: REMOTE,
    HTTPSource: REMOTE,
    S3Source: REMOTE,
    BlobSource: REMOTE,
}


def _instances() -> dict[type, object]:
    return {
        ShardSource: ShardSource(),
        MemorySource: MemorySource({"a.tar": b""}),
        URLSource: URLSource(["pipe:cat a.tar"]),
        LocalSource: LocalSource(["a.tar"]),
        ConcatSource: ConcatSource([MemorySource({"a.tar": b""})]),
        RemoteSource: RemoteSource(),
        HTTPSource: HTTPSource(["http://127.0.0.1:9/a.tar"]),
        S3Source: S3Source.from_urls(["s3://bucket/a.tar"]),
        BlobSource: BlobSource(["http://127.0.0.1:9/a.tar"]),
    }


def _methods(proto: type) -> list[str]:
    return sorted(name for name, value in vars(proto).items() if inspect.isfunction(value) and name[0] != "_")


@pytest.mark.parametrize("cls", list(HAS), ids=lambda c: c.__name__)
def test_each_source_has_exactly_its_capabilities(cls: type) -> None:
    src = _instances()[cls]
    got = {proto for proto in CAPABILITIES if isinstance(src, proto)}
    assert got == HAS[cls], f"{cls.__name__}: {sorted(p.__name__ for p in got ^ HAS[cls])}"


def _params(fn: Any) -> list[tuple[str, Any, Any, Any]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values()]


@pytest.mark.parametrize(
    ("cls", "proto"),
    [(cls, proto) for cls, protos in HAS.items() for proto in CAPABILITIES if proto in protos],
    ids=lambda x: x.__name__,
)
def test_capability_methods_take_the_protocols_parameters(cls: type, proto: type) -> None:
    # Same names, kinds, defaults and (string) annotations: a caller written against the protocol works with every
    # source that has it. (A return type may be narrower, e.g. buffer() -> Buffer where the protocol allows None.)
    for name in _methods(proto):
        assert _params(getattr(cls, name)) == _params(getattr(proto, name)), f"{cls.__name__}.{name}"


def test_protocols_name_the_methods_the_read_path_asks_for() -> None:
    assert {proto.__name__: _methods(proto) for proto in CAPABILITIES} == {
        "Buffered": ["buffer"],
        "Streaming": ["stream_buffer"],
        "RangeReading": ["read_range"],
        "Prefetching": ["prefetch"],
        "SidecarBatching": ["read_sidecars"],
        "SidecarReading": ["read_sidecar"],
        "Routing": ["route", "unroute"],
    }


class _Plain:
    """A DataSource with nothing beyond the protocol (no ShardSource): it has none of the capabilities."""

    def __init__(self, shards: dict[str, bytes]) -> None:
        self._shards = shards

    def list_shards(self) -> list[str]:
        return list(self._shards)

    def open_shard(self, shard: str) -> IO[bytes]:
        return io.BytesIO(self._shards[shard])


class _Recorder(MemorySource):
    """A MemorySource that prefetches, reads sidecars in batches and streams, and records the calls."""

    def __init__(self, shards: dict[str, bytes]) -> None:
        super().__init__(shards)
        self.calls: list[tuple[str, Any]] = []

    def prefetch(self, shards: Any) -> None:
        self.calls.append(("prefetch", list(shards)))

    def read_sidecars(self, shards: list[str]) -> None:
        self.calls.append(("read_sidecars", shards))

    def stream_buffer(self, shard: str, owner: Any = None) -> Any:
        self.calls.append(("stream_buffer", shard))
        return self.buffer(shard)


def test_concat_asks_each_member_for_what_it_has() -> None:
    plain = _Plain({"p.tar": b"plain"})
    rec = _Recorder({"r.tar": b"rec", "r.tar.idx.json": b"{}"})
    assert isinstance(plain, DataSource) and not any(isinstance(plain, proto) for proto in CAPABILITIES)
    src = ConcatSource([plain, rec])
    assert src.buffer("p.tar") is None and src.stream_buffer("p.tar") is None and src.read_sidecar("p.tar") is None
    assert src.buffer("r.tar") == b"rec" and src.read_sidecar("r.tar") == b"{}"
    assert src.stream_buffer("r.tar", owner=object()) == b"rec"
    src.prefetch(iter(["r.tar", "p.tar"]))  # any iterable, as the protocol says (read once)
    src.read_sidecars(["p.tar", "r.tar"])
    assert rec.calls == [("stream_buffer", "r.tar"), ("prefetch", ["r.tar"]), ("read_sidecars", ["r.tar"])]


def test_a_concat_of_sources_reads_like_its_parts(tmp_path: Path) -> None:
    files = write_shards(tmp_path, n=10, per_shard=5)
    local = atd.Dataset[Rec]([str(p) for p in files])
    mem = MemorySource({f.name: f.read_bytes() for f in files[1:]})
    ds = atd.Dataset[Rec](ConcatSource([LocalSource([str(files[0])]), mem]))
    assert rows(ds.ordered()) == rows(local.ordered())
