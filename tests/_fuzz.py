"""A mutation fuzzer over shards and index sidecars, with an oracle for every read (issue 15, part 2).

Used by ``tests/test_fuzz.py`` (a bounded, seeded run in the normal test suite) and ``benchmarks/fuzz.py`` (the
long run). Nothing here is part of the library.

Inputs
------
Seeds are small valid shards (3-8 samples, so a read takes about a millisecond) written by the project's own
writer: a ``@packable`` type (:class:`FuzzSample`: a fixed-shape NDArray, str, int, float, bytes and an optional
field) with and without its ``.idx.json`` sidecar, a ``DictSample`` shard, an original-atdata-style PAX tar of
``.msgpack`` members, and a plain webdataset tar of multi-member samples (``.cls``/``.json``/``.npy``) written by
``tarfile``, with and without a sidecar from ``atd.build_index``. Input ``i`` of a run with seed ``s`` is a pure
function of ``(s, i)`` (:func:`make_input`): one seed and one mutation of one family:

* ``bytes``: bit flips, byte runs (random / 0x00 / 0xff), truncation (random, mid-header, mid-payload, exactly at
  a sample boundary, just before the end-of-archive marker), insertion and deletion of bytes, a zero block over a
  header mid-shard, data after the end-of-archive marker (junk, or a whole valid member).
* ``header``: one tar header field rewritten *with its checksum recomputed* (size, typeflag, name, mode, magic,
  prefix, mtime).
* ``pax``: a PAX ``x``/``g`` or GNU ``L`` header inserted before a member (bad/negative/huge record lengths,
  ``size=`` records, non-UTF-8 paths, ...).
* ``payload``: one sample's payload re-packed with msgpack and the whole shard re-wrapped in a valid tar (and a
  matching sidecar when the seed has one): lying array headers, ``.npy`` headers, non-str map keys, wrong value
  types, ext types, deep nesting, extra and missing fields, non-map payloads.
* ``sidecar``: the shard intact, its sidecar edited: invalid JSON, wrong JSON types, wrong field types, count 0,
  stale (last sample omitted, offsets shifted), lying counts, offsets, sizes, ``payload_ext`` of the wrong type.

Reads
-----
Each input is written to a file with a unique basename and read, in a worker process, four ways with the typed
class (or DictSample for schema-free seeds): ``default`` (``for s in ds``), ``raise`` (``ds.ordered(batch_size=2,
on_error="raise")``, every batch collated to tensors), ``skip`` (``ordered(batch_size=2, on_error="skip")``,
collated) and ``warn`` (``shuffled(seed=..., on_error="warn")``); a quarter of the typed inputs get a fifth read as
``DictSample``. Reads are in-process in the worker (``num_workers=0``). The read path is all local files; the
``source`` dimension (local today; http later) is carried by :class:`Input` so that a remote source can be added.

The oracle
----------
Let ``O`` be the seed's samples and ``T`` the samples whose bytes the mutation touched (byte ranges overlapping
a sample's span, from its first header to the end of its last member's padding; the re-packed sample for
``payload``; none for ``sidecar`` mutations, which leave the shard intact). Samples are compared by value (arrays
by dtype, shape and bytes; floats bit for bit) as multisets, so that order does not matter. Each read is one of:

* ``clean``: no exception, exactly ``len(O)`` samples, every untouched sample present exactly once, and every
  other yielded sample accounted for by a touched one (a mutated-but-decodable value is fine *only* for a touched
  sample: e.g. a flip inside array data, which carries no checksum, or in a key name).
* ``named error``: an :class:`~atdata_torch.errors.AtdataError` whose ``str`` or ``.shard`` names the shard's
  basename.
* ``loss reported`` (skip/warn only): fewer samples, a :class:`SkippedSamplesWarning` was emitted, and either the
  pipeline's ``last_report`` names the shard as unreadable or ``yielded + report.samples == len(O)``; every
  untouched sample that is yielded is intact.

Anything else is bad:

* ``foreign exception``: an exception not derived from ``AtdataError`` (type, message, deepest library frame).
* ``hang``: a read past the time limit (the worker is killed and restarted).
* ``crash``: the worker process died (signal, OOM); the address space is capped with ``RLIMIT_AS`` (4 GiB over
  what the imports use), so a huge allocation is a ``MemoryError`` (a foreign exception), not a dead machine.
* ``silent loss``: fewer samples with no error and no warning; also a full read of a shard with data after its
  end-of-archive marker (the extra data was ignored without a word).
* ``miscounted loss``: a warning, but ``yielded + reported`` is not ``len(O)`` and the shard is not named
  unreadable.
* ``silent corruption``: an untouched sample differs or is missing while others are yielded in its place, a sample
  is duplicated, or more samples than the shard holds.
* ``nameless error``: an ``AtdataError`` that does not name the shard.
* ``harness error``: the fuzzer itself failed on the input (a bug here, never the library's; reported apart).

The first few inputs of each bad class are saved under ``OUT/<class>/<i>/`` (the shard, its sidecar and
``info.json`` with the seed, the mutation, the read and the exception), and :meth:`FuzzReport.markdown` gives the
counts table and the top distinct signatures (class, read mode, exception type, message prefix).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import shutil
import struct
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

import atdata_torch as atd

BLOCK = 512
RECORD = 10240
MODES = ("default", "raise", "skip", "warn")
GOOD = ("clean", "named error", "loss reported")
BAD = (
    "foreign exception",
    "hang",
    "crash",
    "silent loss",
    "miscounted loss",
    "silent corruption",
    "nameless error",
    "harness error",
)
CLASSES = GOOD + BAD


@atd.packable
class FuzzSample:
    """The typed seed sample: every kind of field the codec handles."""

    image: atd.NDArray
    label: str
    n: int
    score: float
    blob: bytes
    note: str | None = None


# ---------------------------------------------------------------------------------------------------- tar bits
def fix_checksum(h: bytearray) -> None:
    """Recompute a tar header's checksum in place."""
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)


def ustar_header(name: bytes, size: int, typeflag: bytes = b"0", mtime: int = 0) -> bytearray:
    """A valid ustar header (name truncated to 100 bytes)."""
    h = bytearray(BLOCK)
    name = name[:100]
    h[0 : len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0001750\0"
    h[116:124] = b"0001750\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % mtime
    h[156:157] = typeflag
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    fix_checksum(h)
    return h


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member_bytes(name: bytes, data: bytes, typeflag: bytes = b"0") -> bytes:
    return bytes(ustar_header(name, len(data), typeflag)) + pad(data)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


@dataclass
class Header:
    """One header of a seed: where it is, its typeflag, data size, and the sample it belongs to."""

    offset: int
    typeflag: bytes
    size: int
    data_offset: int
    sample: int
    name: bytes


def walk(buf: bytes) -> tuple[list[Header], list[tuple[int, int]], int]:
    """Headers, per-sample spans ``[start, end)`` and the end-of-archive offset of a *valid* seed tar."""
    headers: list[Header] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    key: str | None = None
    pending: list[Header] = []  # x/g/L headers waiting for their member
    while buf[pos : pos + BLOCK] != bytes(BLOCK):
        h = buf[pos : pos + BLOCK]
        size = int(h[124:136].split(b"\0")[0].strip() or b"0", 8)
        tf = h[156:157]
        data_off = pos + BLOCK
        hd = Header(pos, tf, size, data_off, -1, h[0:100].split(b"\0")[0])
        end = data_off + size + (-size % BLOCK)
        if tf in (b"x", b"g", b"L"):
            pending.append(hd)
        else:
            name = hd.name
            if pending and pending[0].typeflag == b"x":
                m = re.search(
                    rb"path=([^\n]*)\n", buf[pending[0].data_offset : pending[0].data_offset + pending[0].size]
                )
                if m:
                    name = m.group(1)
            base = name.decode().rsplit("/", 1)[-1].split(".", 1)[0]
            start = pending[0].offset if pending else pos
            if base != key:
                key = base
                spans.append((start, end))
            else:
                spans[-1] = (spans[-1][0], end)
            for p in [*pending, hd]:
                p.sample = len(spans) - 1
                headers.append(p)
            pending = []
        pos = end
    return headers, spans, pos


# ---------------------------------------------------------------------------------------------------- values
def canon(v: Any, depth: int = 0) -> Any:
    """A hashable value-equality form of a decoded value (arrays by dtype+shape+bytes, floats bit for bit)."""
    if depth > 40:
        return ("deep",)
    if isinstance(v, np.ndarray):
        try:
            return ("nd", v.dtype.str, v.shape, np.ascontiguousarray(v).tobytes())
        except Exception:
            return ("nd?", repr(v.dtype), v.shape)
    if isinstance(v, np.generic):
        return ("np", v.dtype.str, v.tobytes())
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int):
        return ("i", v)
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ("y", bytes(v))
    if isinstance(v, str):
        return ("s", v)
    if v is None:
        return ("n",)
    if isinstance(v, (list, tuple)):
        return ("l", tuple(canon(x, depth + 1) for x in v))
    if isinstance(v, dict):
        return ("d", tuple(sorted((repr(canon(k, depth + 1)), canon(x, depth + 1)) for k, x in v.items())))
    return ("o", type(v).__name__, repr(v)[:200])


def canon_sample(s: Any, drop_none: bool = False) -> Any:
    """A sample's canonical form; ``drop_none`` for DictSample batches (a batch's columns are the union of the
    samples' fields, so a sample without a field gets ``None`` there)."""
    data = object.__getattribute__(s, "_data") if isinstance(s, atd.DictSample) else dict(vars(s))
    items = ((k if isinstance(k, str) else repr(k), canon(v)) for k, v in data.items() if not (drop_none and v is None))
    return tuple(sorted(items))


# ---------------------------------------------------------------------------------------------------- seeds
@dataclass
class Seed:
    """A valid small shard the mutations start from, with what reading it must give."""

    name: str
    kind: str  # "typed" (FuzzSample payloads), "dict" (schema-free msgpack), "wds" (multi-member)
    shard: bytes
    sidecar: bytes | None
    headers: list[Header]
    spans: list[tuple[int, int]]
    eoa: int
    members: list[list[tuple[bytes, bytes]]]  # per sample: (member name, data), for re-wrapping
    pax_style: bool  # members preceded by PAX headers (original atdata / tarfile PAX)
    expected: dict[str, list[Any]]  # "typed" / "dict" -> canonical samples
    groups: list[int] | None = None  # samples per span (packed members hold several); None: one each

    def samples_of(self, spans: set[int]) -> set[int]:
        """The sample indices of these spans (themselves, unless the seed is packed)."""
        if self.groups is None:
            return spans
        firsts = [sum(self.groups[:j]) for j in range(len(self.groups))]
        return {firsts[j] + k for j in spans if 0 <= j < len(self.groups) for k in range(self.groups[j])}


def _typed_samples(n: int, rng: random.Random) -> list[FuzzSample]:
    out = []
    for i in range(n):
        out.append(
            FuzzSample(
                image=np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * i,
                label=f"label-{i}-{rng.randrange(1000)}",
                n=i * 7 + 1,
                score=i / 3 + 0.125,
                blob=bytes([i, 255 - i, 7]) * (i + 1),
                note=None if i % 2 else f"note{i}",
            )
        )
    return out


def _read_back(path: str, kind: str) -> tuple[bytes, bytes | None]:
    with open(path, "rb") as f:
        shard = f.read()
    side = None
    if os.path.exists(path + ".idx.json"):
        with open(path + ".idx.json", "rb") as f:
            side = f.read()
    return shard, side


def _tarfile_shard(members: list[tuple[str, bytes]]) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1700000000.5  # a float mtime makes tarfile write a PAX header, as webdataset does
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    return bio.getvalue()


def build_seeds() -> list[Seed]:
    """The seed shards (deterministic), checked against the values they were written from."""
    rng = random.Random(1234)
    raw: list[tuple[str, str, bytes, bytes | None, list[Any] | None]] = []
    with tempfile.TemporaryDirectory() as d:
        for n, side in ((3, True), (5, True), (8, True), (4, False)):
            samples = _typed_samples(n, rng)
            p = os.path.join(d, f"typed{n}.tar")
            atd.write_samples(samples, p, sidecar=side, progress=False)
            raw.append((f"typed{n}{'' if side else '-nosidecar'}", "typed", *_read_back(p, "typed"), samples))
        dicts = [
            atd.DictSample({"x": np.arange(4, dtype=np.int16) * i, "tag": f"t{i}", "v": [i, {"k": i}], "f": 0.5 * i})
            for i in range(4)
        ]
        p = os.path.join(d, "dict4.tar")
        atd.write_samples(dicts, p, progress=False)
        raw.append(("dict4", "dict", *_read_back(p, "dict"), None))
        # The original atdata's layout: .msgpack members behind PAX headers (tarfile PAX format, float mtime).
        typed = _typed_samples(4, rng)
        p = os.path.join(d, "pax4.tar")
        with open(p, "wb") as f:
            f.write(_tarfile_shard([(f"k{i:03d}.msgpack", s.packed) for i, s in enumerate(typed)]))
        raw.append(("pax4-nosidecar", "typed", *_read_back(p, "typed"), typed))
        atd.build_index(p, progress=False)
        raw.append(("pax4", "typed", *_read_back(p, "typed"), typed))
        # A plain webdataset tar: several members per sample.
        wds: list[tuple[str, bytes]] = []
        for i in range(5):
            npy = io.BytesIO()
            np.save(npy, np.arange(3, dtype=np.float64) + i, allow_pickle=False)
            wds += [
                (f"s{i:04d}.cls", str(i).encode()),
                (f"s{i:04d}.json", json.dumps({"i": i, "name": f"n{i}"}).encode()),
                (f"s{i:04d}.npy", npy.getvalue()),
            ]
        p = os.path.join(d, "wds5.tar")
        with open(p, "wb") as f:
            f.write(_tarfile_shard(wds))
        raw.append(("wds5-nosidecar", "wds", *_read_back(p, "wds"), None))
        atd.build_index(p, progress=False)
        raw.append(("wds5", "wds", *_read_back(p, "wds"), None))
        # The compact layout (write_samples(pack=N)): several samples per .msgpacks member.
        typed = _typed_samples(7, rng)
        p = os.path.join(d, "packed7.tar")
        atd.write_samples(typed, p, pack=3, progress=False)
        raw.append(("packed7", "typed", *_read_back(p, "typed"), typed))
        os.unlink(p + ".idx.json")
        raw.append(("packed7-nosidecar", "typed", *_read_back(p, "typed"), typed))
        p = os.path.join(d, "packeddict5.tar")
        more = [atd.DictSample({"x": np.arange(3, dtype=np.uint8) + i, "tag": f"p{i}", "f": 1.5 * i}) for i in range(5)]
        atd.write_samples(more, p, pack=2, key=lambda _s, i: f"d{i:02d}", progress=False)
        raw.append(("packeddict5", "dict", *_read_back(p, "dict"), None))

        seeds = []
        for name, kind, shard, side, values in raw:
            headers, spans, eoa = walk(shard)
            members: list[list[tuple[bytes, bytes]]] = [[] for _ in spans]
            for h in headers:
                if h.typeflag not in (b"x", b"g", b"L"):
                    nm = h.name
                    members[h.sample].append((nm, shard[h.data_offset : h.data_offset + h.size]))
            p = os.path.join(d, f"check-{name}.tar")
            with open(p, "wb") as f:
                f.write(shard)
            if side is not None:
                with open(p + ".idx.json", "wb") as f:
                    f.write(side)
            dicts = list(atd.Dataset[atd.DictSample](p))
            expected: dict[str, list[Any]] = {
                "dict": [canon_sample(s) for s in dicts],
                "dict-batched": [canon_sample(s, True) for s in dicts],
            }
            if kind == "typed":
                got = [canon_sample(s) for s in atd.Dataset[FuzzSample](p)]
                assert values is not None and got == [canon_sample(s) for s in values], f"seed {name} reads wrong"
                expected["typed"] = got
            groups = None
            if name.startswith("packed"):
                groups = [len(unpack_pairs(m[0][1])) for m in members]
            assert len(expected["dict"]) == (sum(groups) if groups else len(spans)), f"seed {name}: {len(spans)} spans"
            seeds.append(
                Seed(
                    name,
                    kind,
                    shard,
                    side,
                    headers,
                    spans,
                    eoa,
                    members,
                    b"x" in {h.typeflag for h in headers},
                    expected,
                    groups,
                )
            )
    return seeds


# ---------------------------------------------------------------------------------------------------- inputs
@dataclass
class Input:
    """One fuzz input: a (possibly mutated) shard and sidecar, and what the mutation touched."""

    index: int
    seed_name: str
    family: str
    desc: str
    shard: bytes
    sidecar: bytes | None
    touched: set[int]
    n_expected: int
    expected: dict[str, list[Any]]
    reads: list[tuple[str, str]]  # (mode, "typed" | "dict")
    vanish: int = 0  # a deletion can leave a valid shard without these touched samples: fewer is then no loss
    regroup: int = 0  # a renamed member of a multi-member sample may split or merge samples: count may move this much
    eoa_data: bool = False  # non-zero data after the end-of-archive marker: a quiet full read is a silent loss
    source: str = "local"

    @property
    def basename(self) -> str:
        return f"fz{self.index:07d}.tar"


def _touched(seed: Seed, lo: int, hi: int) -> set[int]:
    return {j for j, (a, b) in enumerate(seed.spans) if a < hi and lo < b}


def _pos(rng: random.Random, seed: Seed) -> int:
    if rng.random() < 0.85:
        return rng.randrange(0, seed.eoa + BLOCK)
    return rng.randrange(0, len(seed.shard))


def _mut_bytes(rng: random.Random, seed: Seed) -> tuple[str, bytes, set[int], bool, bool]:
    """-> (desc, shard, touched, keep_sidecar_ok, eoa_data)"""
    b = bytearray(seed.shard)
    kind = rng.choice(["flip", "flip", "run", "truncate", "truncate", "insert", "delete", "zeroblock", "after_eoa"])
    if kind == "flip":
        touched: set[int] = set()
        n = rng.choice([1, 1, 2, 8])
        for _ in range(n):
            p = _pos(rng, seed)
            b[p] ^= 1 << rng.randrange(8)
            touched |= _touched(seed, p, p + 1)
        return f"flip x{n}", bytes(b), touched, True, False
    if kind == "run":
        p = _pos(rng, seed)
        n = rng.choice([1, 4, 16, 64, 512])
        fill = rng.choice(["zero", "ff", "random"])
        data = bytes(n) if fill == "zero" else b"\xff" * n if fill == "ff" else rng.randbytes(n)
        b[p : p + n] = data[: len(b) - p]
        return f"run {fill} {n}@{p}", bytes(b), _touched(seed, p, p + n), True, False
    if kind == "truncate":
        where = rng.choice(["random", "header", "payload", "boundary", "before_eoa", "eoa_half"])
        if where == "random":
            p = _pos(rng, seed)
        elif where == "header":
            h = rng.choice(seed.headers)
            p = h.offset + rng.randrange(1, BLOCK)
        elif where == "payload":
            h = rng.choice([h for h in seed.headers if h.size > 1])
            p = h.data_offset + rng.randrange(1, h.size)
        elif where == "boundary":
            p = seed.spans[rng.randrange(len(seed.spans))][1]
        elif where == "before_eoa":
            p = seed.eoa
        else:
            p = seed.eoa + BLOCK
        return f"truncate {where}@{p}", bytes(b[:p]), _touched(seed, p, len(b)), True, False
    if kind == "insert":
        p = _pos(rng, seed)
        n = rng.choice([1, 3, 512, 1024])
        data = bytes(n) if rng.random() < 0.3 else rng.randbytes(n)
        b[p:p] = data
        return f"insert {n}@{p}", bytes(b), _touched(seed, p, p + 1), True, False
    if kind == "delete":
        p = _pos(rng, seed)
        n = rng.choice([1, 3, 512, 1024])
        del b[p : p + n]
        return f"delete {n}@{p}", bytes(b), _touched(seed, p, p + n), True, False
    if kind == "zeroblock":
        h = rng.choice(seed.headers)
        if rng.random() < 0.5:
            b[h.offset : h.offset + BLOCK] = bytes(BLOCK)
            return f"zero header block@{h.offset}", bytes(b), {h.sample}, True, False
        b[h.offset : h.offset] = bytes(BLOCK)
        return f"insert zero block@{h.offset}", bytes(b), {h.sample}, True, False
    # after the end-of-archive marker (two zero blocks at seed.eoa)
    p = seed.eoa + 2 * BLOCK
    if rng.random() < 0.5:
        extra = member_bytes(b"zzextra.msgpack", msgpack.packb({"label": "extra"}))
        what = "valid member"
    else:
        extra = rng.randbytes(rng.choice([1, 100, 512]))
        if not any(extra):  # all zero bytes are padding, not data: make the junk junk
            extra = b"\x01" + extra[1:]
        what = "junk"
    b[p : p + len(extra)] = extra
    return f"after EOA: {what}", bytes(b), set(), True, True


_SIZES = ["0", "-1", "+1", "+512", "x1000", "2**33", "neg256", "huge256", "garbage", "blank"]
_TYPEFLAGS = [
    b"0",
    b"\0",
    b"7",
    b"1",
    b"2",
    b"3",
    b"4",
    b"5",
    b"6",
    b"S",
    b"K",
    b"L",
    b"x",
    b"g",
    b"V",
    b"M",
    b"D",
    b"Z",
]
_NAMES = [
    b"\xff\xfe.msgpack",
    b"",
    b"a/b/c.msgpack",
    b"dup",
    b"noext",
    b".msgpack",
    b"x" * 100,
    b"../../etc.msgpack",
    b"k.a.b.msgpack",
    b"k.npy",
    b"k.json",
]


def _mut_header(rng: random.Random, seed: Seed) -> tuple[str, bytes, set[int], bool, bool]:
    b = bytearray(seed.shard)
    hd = rng.choice(seed.headers)
    h = bytearray(b[hd.offset : hd.offset + BLOCK])
    extra_touched: set[int] = set()
    what = rng.choice(["size", "size", "typeflag", "typeflag", "name", "mode", "magic", "prefix", "mtime"])
    if what == "size":
        how = rng.choice(_SIZES)
        s = hd.size
        if how == "neg256":
            h[124:136] = b"\xff" * 12
        elif how == "huge256":
            h[124:136] = b"\x80" + (2**64).to_bytes(11, "big")
        elif how == "garbage":
            h[124:136] = b"12x45\0\0\0\0\0\0\0"
        elif how == "blank":
            h[124:136] = b" " * 12
        else:
            v = {"0": 0, "-1": s - 1, "+1": s + 1, "+512": s + 512, "x1000": s * 1000, "2**33": 2**33 - 1}[how]
            h[124:136] = b"%011o\0" % max(v, 0)
        desc = f"header size {how}"
    elif what == "typeflag":
        tf = rng.choice(_TYPEFLAGS)
        h[156:157] = tf
        desc = f"header typeflag {tf!r}"
    elif what == "name":
        nm = rng.choice(_NAMES)
        if nm == b"dup":
            others = [x for x in seed.headers if x.name != hd.name and x.typeflag not in (b"x", b"g", b"L")]
            if others:
                other = rng.choice(others)
                nm = other.name
                extra_touched.add(other.sample)
            else:
                nm = b"dup.msgpack"
        h[0:100] = nm[:100].ljust(100, b"\0")
        desc = f"header name {nm[:30]!r}"
    elif what == "mode":
        h[100:108] = rng.choice([b"zzzzzzz\0", b"7777777\0", b"\0" * 8])
        desc = "header mode"
    elif what == "magic":
        h[257:265] = rng.choice([b"ustar  \0", b"garbage!", b"\0" * 8])
        desc = "header magic"
    elif what == "prefix":
        h[345:500] = rng.choice([b"dir", b"\xff\xfe", b"a" * 155]).ljust(155, b"\0")
        desc = "header prefix"
    else:
        h[136:148] = rng.choice([b"zzzzzzzzzzz\0", b"\xff" * 12])
        desc = "header mtime"
    fix_checksum(h)
    b[hd.offset : hd.offset + BLOCK] = h
    return desc + f" (tf {hd.typeflag!r})", bytes(b), {hd.sample} | extra_touched, True, False


_PAX_BODIES: list[tuple[str, bytes]] = [
    ("path non-utf8", pax_record(b"path", b"\xff\xfe\xfd.msgpack")),
    ("size=-1024", pax_record(b"size", b"-1024")),
    ("size=-1", pax_record(b"size", b"-1")),
    ("size huge", pax_record(b"size", b"99999999999999")),
    ("size=abc", pax_record(b"size", b"abc")),
    ("length lies long", b"99 path=x.msgpack\n"),
    ("length negative", b"-5 path=x.msgpack\n"),
    ("length -1024", b"-1024 path=x\n"),
    ("length zero", b"0 path=x\n"),
    ("length huge", b"999999999999 path=x\n"),
    ("no newline", b"12 path=abc"),
    ("no space", b"12path=abc\n"),
    ("hdrcharset binary", pax_record(b"hdrcharset", b"BINARY") + pax_record(b"path", b"\xff.msgpack")),
    ("path dotted", pax_record(b"path", b"a.b.c.msgpack")),
    ("path empty", pax_record(b"path", b"")),
    ("mtime garbage", pax_record(b"mtime", b"nan-ish")),
    ("garbage", bytes(range(256))),
]


def _mut_pax(rng: random.Random, seed: Seed) -> tuple[str, bytes, set[int], bool, bool]:
    b = bytearray(seed.shard)
    members = [h for h in seed.headers if h.typeflag not in (b"x", b"g", b"L")]
    target = rng.choice(members)
    at = target.offset
    # a pax header already in front of the target stays in front of the inserted one
    tf = rng.choice([b"x", b"x", b"x", b"g", b"L"])
    if tf == b"L":
        body = rng.choice([target.name + b"\0", b"\xff\xfe.msgpack\0", b"a" * 5000 + b".msgpack", b""])
        label = f"GNU L {len(body)}"
    else:
        label, body = rng.choice(_PAX_BODIES)
    size = len(body)
    lie = rng.random() < 0.25
    if lie:
        size = rng.choice([size + 512, max(size - 1, 0), 10**9])
    hdr = ustar_header(b"././@PaxHeader" if tf != b"L" else b"././@LongLink", size, tf)
    blob = bytes(hdr) + pad(body)
    b[at:at] = blob
    return f"pax {tf!r} {label}{' size lies' if lie else ''}", bytes(b), {target.sample}, True, False


def ndarray_bytes(dtype: bytes, shape: list[int], data: bytes, dlen: int | None = None) -> bytes:
    out = bytes([len(dtype) if dlen is None else dlen]) + dtype + bytes([len(shape) % 256])
    for s in shape:
        out += struct.pack("<q", s) if -(2**63) <= s < 2**63 else b"\xff" * 8
    return out + data


def _npy(header: bytes, data: bytes, version: bytes = b"\x01\x00") -> bytes:
    hl = len(header) + 1
    hl += -(10 + hl) % 64
    return b"\x93NUMPY" + version + struct.pack("<H", hl) + header.ljust(hl - 1) + b"\n" + data


_DTYPES = [
    b"(2,)<f4",
    b"O",
    b"|O",
    b"<f4 ",
    b"garbage",
    b"",
    b"<f4" * 30,
    b"V8",
    b"<U0",
    b"<M8[Q]",
    b"[('a','<f4')]",
    b"\xff\xfe",
    b"f4",
    b"<f400",
    b">f4",
    b"<c16",
    b"|V0",
    b"S0",
    b"b1",
    b"<f8",
    b"|u1",
    b"<i4",
    b"(3,2)<f4",
    b"<f4,<f4",
    b"'<f4'",
    b"__import__('os')",
]


def _array_value(rng: random.Random) -> tuple[str, bytes]:
    data = np.arange(6, dtype=np.float32).tobytes()
    k = rng.choice(["dtype", "dtype", "ndim65", "huge", "mismatch", "dlen", "npy", "npy", "short"])
    if k == "dtype":
        d = rng.choice(_DTYPES)
        return f"array dtype {d[:20]!r}", ndarray_bytes(d, [2, 3], data)
    if k == "ndim65":
        return "array ndim 65", ndarray_bytes(b"<f4", [1] * 65, data[:4])
    if k == "huge":
        shape = rng.choice(
            [[2**40, 2**40], [2**62], [2**31, 2**31, 4], [-1, 6], [0], [2**63 - 1, 2], [-(2**40), -(2**40)]]
        )
        return f"array shape {shape}", ndarray_bytes(b"<f4", shape, data)
    if k == "mismatch":
        shape = rng.choice([[3, 3], [2, 2], [7], []])
        return f"array shape/bytes mismatch {shape}", ndarray_bytes(b"<f4", shape, data[: rng.choice([24, 23, 25, 0])])
    if k == "dlen":
        return "array dtype length lies", ndarray_bytes(b"<f4", [2, 3], data, dlen=rng.choice([0, 200, 255, 4]))
    if k == "short":
        return "array header cut", ndarray_bytes(b"<f4", [2, 3], b"")[: rng.randrange(0, 8)]
    hdrs = [
        b"{'descr': '(2,)<f4', 'fortran_order': False, 'shape': (3,), }",
        b"{'descr': 'O', 'fortran_order': False, 'shape': (6,), }",
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }",
        b"{'descr': <f4', 'fortran_order': False, 'shape': (6,), }",
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), ",
        b"{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2), }",
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }",
        b"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }",
        b'"""',
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
        b"{'descr': '<f4', 'shape': (6,), }",
        b"[1, 2]",
    ]
    h = rng.choice(hdrs)
    version = rng.choice([b"\x01\x00", b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x09"])
    v = (
        _npy(h, data, version)
        if version != b"\x02\x00"
        else b"\x93NUMPY\x02\x00" + struct.pack("<I", len(h) + 1) + h + b"\n" + data
    )
    if rng.random() < 0.2:
        v = v[: rng.randrange(6, len(v))]
    return f".npy {h[:36]!r} v{version[0]}", v


_WRONG = [
    None,
    1,
    -1,
    2**64 - 1,
    -(2**63),
    1.5,
    float("nan"),
    "s",
    b"b",
    [1, 2],
    {"a": 1},
    True,
    msgpack.ExtType(5, b"xx"),
    msgpack.Timestamp(1, 0),
    "\udcff",
]


def _deep(n: int) -> bytes:
    return b"\x91" * n + b"\xc0"


def _payload_bytes(rng: random.Random, payload: bytes, kind: str) -> tuple[str, bytes]:
    """A mutated msgpack payload (from a valid one)."""
    m = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    keys = list(m)
    k = rng.choice(["array", "array", "array", "keys", "type", "type", "deep", "extra", "missing", "notmap", "raw"])
    if kind == "dict" and k == "missing":
        k = "extra"
    if k == "array":
        arr_fields = [f for f in keys if isinstance(m[f], bytes) and f in ("image", "x")]
        f = arr_fields[0] if arr_fields else keys[0]
        desc, v = _array_value(rng)
        m[f] = v
        return f"{f}: {desc}", msgpack.packb(m)
    if k == "keys":
        how = rng.choice(["int", "bytes", "nested", "allint", "float", "none"])
        if how == "int":
            m[1] = "x"
        elif how == "bytes":
            m[keys[0].encode()] = m.pop(keys[0])
        elif how == "nested":
            m[(1, (2, "a"))] = 1
        elif how == "allint":
            m = {i: v for i, v in enumerate(m.values())}
        elif how == "float":
            m[1.5] = 1
        else:
            m[None] = 1
        return f"map key {how}", msgpack.packb(m)
    if k == "type":
        f = rng.choice(keys)
        v = rng.choice(_WRONG)
        m[f] = v
        try:
            return f"{f} := {type(v).__name__}", msgpack.packb(m, unicode_errors="surrogateescape")
        except Exception:
            m[f] = None
            return f"{f} := None", msgpack.packb(m)
    if k == "deep":
        f = rng.choice(keys)
        n = rng.choice([100, 1000, 100000])
        body = msgpack.packb({kk: vv for kk, vv in m.items() if kk != f})
        # a map header with one more entry, then the deep value
        cnt = len(m)
        head = bytes([0x80 | cnt]) if cnt < 16 else b"\xde" + struct.pack(">H", cnt)
        old_head_len = 1 if cnt - 1 < 16 else 3
        return f"{f} nested {n} deep", head + body[old_head_len:] + msgpack.packb(f) + _deep(n)
    if k == "extra":
        m["zz_extra"] = rng.choice([1, "x", [1], {"a": b"b"}])
        return "extra field", msgpack.packb(m)
    if k == "missing":
        f = rng.choice(keys)
        del m[f]
        return f"missing {f}", msgpack.packb(m)
    if k == "notmap":
        v = rng.choice([[1, 2], 5, "str", b"", None, list(m.values())])
        return f"payload is {type(v).__name__}", msgpack.packb(v)
    how = rng.choice(["truncated", "trailing", "twomaps", "countlies", "empty", "badbyte"])
    if how == "truncated":
        return "payload truncated", payload[: rng.randrange(0, len(payload))]
    if how == "trailing":
        return "payload + trailing bytes", payload + rng.randbytes(rng.choice([1, 8]))
    if how == "twomaps":
        return "two maps", payload + payload
    if how == "countlies":
        first = payload[0]
        return "map count lies", bytes([(first & 0xF0) | ((first + 1) & 0x0F)]) + payload[1:]
    if how == "empty":
        return "payload empty map", b"\x80"
    return "payload reserved byte 0xc1", b"\xc1" + payload[1:]


def _wds_member(rng: random.Random, name: bytes, data: bytes) -> tuple[str, bytes]:
    ext = name.split(b".", 1)[1]
    if ext == b"npy":
        desc, v = _array_value(rng)
        if not v.startswith(b"\x93NUMPY"):
            v = rng.choice([v, data[: rng.randrange(len(data))]])
        return f"npy member {desc}", v
    if ext == b"json":
        return "json member", rng.choice([b"{", b"", b"\xff\xfe", b"[" * 100000, b"NaN", b'{"i": 1e999}'])
    return "cls member", rng.choice([b"abc", b"", b"1" * 5000, b"\xff", b"-0", b"1.5"])


def rewrap(seed: Seed, members: list[list[tuple[bytes, bytes]]]) -> tuple[bytes, bytes | None]:
    """A valid ustar shard of these members (and a sidecar matching it when the seed has one)."""
    out = bytearray()
    keys, offsets, lengths, poffs, psizes = [], [], [], [], []
    for mem in members:
        start = len(out)
        for name, data in mem:
            if len(mem) == 1:
                poffs.append(len(out) + BLOCK)
                psizes.append(len(data))
            out += member_bytes(name, data)
        keys.append(mem[0][0].decode("utf-8", "replace").split(".", 1)[0])
        offsets.append(start)
        lengths.append(len(out) - start)
    out += bytes(2 * BLOCK)
    out += bytes(-len(out) % RECORD)
    side = None
    if seed.sidecar is not None:
        d = json.loads(seed.sidecar)
        single = all(len(m) == 1 for m in members)
        d.update(
            count=len(members),
            keys=keys,
            offsets=offsets,
            lengths=lengths,
            size=len(out),
            sha256=hashlib.sha256(out).hexdigest(),
        )
        if single and d.get("payload_ext"):
            d.update(payload_offsets=poffs, payload_sizes=psizes)
        side = json.dumps(d).encode()
    return bytes(out), side


def _mut_payload(rng: random.Random, seed: Seed) -> tuple[str, bytes, bytes | None, set[int]]:
    members = [list(m) for m in seed.members]
    j = rng.randrange(len(members))
    if seed.kind == "wds":
        r = rng.random()
        mi = rng.randrange(len(members[j]))
        name, data = members[j][mi]
        if r < 0.7:
            desc, v = _wds_member(rng, name, data)
            members[j][mi] = (name, v)
        elif r < 0.85:
            desc = f"drop member {name!r}"
            del members[j][mi]
            if not members[j]:
                members[j] = [(name.split(b".")[0] + b".cls", b"1")]
        else:
            desc = f"duplicate member {name!r}"
            members[j].insert(mi, (name, data))
    else:
        name, data = members[j][0]
        desc, v = _payload_bytes(rng, data, seed.kind)
        members[j][0] = (name, v)
    shard, side = rewrap(seed, members)
    return f"payload[{j}] {desc}", shard, side, {j}


def _mut_sidecar(rng: random.Random, seed: Seed) -> tuple[str, bytes]:
    assert seed.sidecar is not None
    if rng.random() < 0.2:
        raw = rng.choice(
            [
                b"",
                b"{",
                b"null",
                b"[]",
                b"5",
                b'"x"',
                b"true",
                b"[" * 100000,
                b"\xff\xfe",
                b'{"count": NaN}',
                b"{" * 5000,
            ]
        )
        return f"sidecar raw {raw[:12]!r}", raw
    d = json.loads(seed.sidecar)
    n = d["count"]
    k = rng.choice(
        [
            "type",
            "type",
            "count0",
            "stale_last",
            "stale_first",
            "shift",
            "shift_one",
            "poff",
            "psize",
            "size",
            "big",
            "lengths",
            "count+1",
            "ext",
            "meta",
            "dupe",
            "swap",
            "nesting",
        ]
    )
    if k == "type":
        f = rng.choice(
            [
                "count",
                "keys",
                "offsets",
                "lengths",
                "size",
                "sha256",
                "schema_id",
                "payload_ext",
                "payload_offsets",
                "payload_sizes",
                "extra",
                "format",
                "version",
            ]
        )
        v = rng.choice([None, "3", 3.5, [], {}, -1, 2**70, True, [None], ["a"], [2**70], [1.5], {"a": 1}])
        d[f] = v
        desc = f"sidecar {f} := {json.dumps(v)[:20]}"
    elif k == "count0":
        for f in ("keys", "offsets", "lengths", "payload_offsets", "payload_sizes"):
            if d.get(f) is not None:
                d[f] = []
        d["count"] = 0
        desc = "sidecar count 0 (lists emptied)"
    elif k in ("stale_last", "stale_first"):
        sl = slice(0, n - 1) if k == "stale_last" else slice(1, n)
        for f in ("keys", "offsets", "lengths", "payload_offsets", "payload_sizes"):
            if d.get(f) is not None:
                d[f] = d[f][sl]
        d["count"] = n - 1
        desc = f"sidecar {k} sample omitted"
    elif k in ("shift", "shift_one"):
        delta = rng.choice([512, -512, 1, 1024])
        f = rng.choice(["offsets", "payload_offsets"] if d.get("payload_offsets") else ["offsets"])
        if k == "shift":
            d[f] = [x + delta for x in d[f]]
        else:
            i = rng.randrange(n)
            d[f][i] += delta
        desc = f"sidecar {f} {k} {delta:+d}"
    elif k == "poff":
        if d.get("payload_offsets"):
            d["payload_offsets"][rng.randrange(n)] = rng.choice([0, -1, 2**70, d["size"], d["size"] - 1])
        desc = "sidecar payload_offset lies"
    elif k == "psize":
        if d.get("payload_sizes"):
            i = rng.randrange(n)
            d["payload_sizes"][i] = rng.choice([0, -1, d["payload_sizes"][i] + 1, d["payload_sizes"][i] - 1, 2**40])
        desc = "sidecar payload_size lies"
    elif k == "size":
        d["size"] = rng.choice([0, d["size"] - 512, d["size"] + 512, 2**70, -1])
        desc = f"sidecar size := {d['size']}"
    elif k == "big":
        d[rng.choice(["offsets", "lengths"])][rng.randrange(n)] = 2**70
        desc = "sidecar offset/length 2**70"
    elif k == "lengths":
        i = rng.randrange(n)
        d["lengths"][i] = rng.choice([0, 1, d["lengths"][i] + 512, d["lengths"][i] - 512])
        desc = "sidecar lengths lie"
    elif k == "count+1":
        d["count"] = n + rng.choice([1, -1])
        desc = "sidecar count off by one (lists unchanged)"
    elif k == "ext":
        v = rng.choice([5, [], "npy", "json", "", None, {"a": 1}])
        d["payload_ext"] = v
        desc = f"sidecar payload_ext := {json.dumps(v)}"
    elif k == "meta":
        f, v = rng.choice(
            [
                ("format", "other"),
                ("version", 2),
                ("sha256", "0" * 64),
                ("schema_id", "Other@1"),
                ("keys", ["same"] * n),
                ("extra", []),
            ]
        )
        d[f] = v
        desc = f"sidecar {f} := {json.dumps(v)[:20]}"
    elif k == "dupe":
        for f in ("keys", "offsets", "lengths", "payload_offsets", "payload_sizes"):
            if d.get(f) is not None:
                d[f] = [d[f][0], *d[f][:-1]]
        desc = "sidecar first sample listed twice, last omitted"
    elif k == "swap":
        for f in ("keys", "offsets", "lengths", "payload_offsets", "payload_sizes"):
            if d.get(f) is not None and n > 1:
                d[f][0], d[f][1] = d[f][1], d[f][0]
        desc = "sidecar entries 0 and 1 swapped"
    else:
        d["extra"] = {"a": [[[[[[[[1]]]]]]]]}
        d["zz_unknown"] = {"x": 1}
        desc = "sidecar nested extra + unknown key"
    return desc, json.dumps(d).encode()


FAMILIES = ["bytes", "bytes", "bytes", "header", "header", "pax", "payload", "payload", "sidecar", "sidecar"]


def make_input(seeds: list[Seed], seed: int, i: int) -> Input:
    """Input ``i`` of the run with ``seed``: a pure function of (seeds, seed, i)."""
    rng = random.Random(f"atdata-fuzz:{seed}:{i}")
    family = rng.choice(FAMILIES)
    pool = [s for s in seeds if s.sidecar is not None] if family == "sidecar" else seeds
    sd = rng.choice(pool)
    sidecar = sd.sidecar
    eoa_data = False
    if family == "bytes":
        desc, shard, touched, _, eoa_data = _mut_bytes(rng, sd)
    elif family == "header":
        desc, shard, touched, _, eoa_data = _mut_header(rng, sd)
    elif family == "pax":
        desc, shard, touched, _, eoa_data = _mut_pax(rng, sd)
    elif family == "payload" and sd.groups is not None:
        desc, shard, sidecar, touched = _mut_packed(rng, sd)
    elif family == "payload":
        desc, shard, sidecar, touched = _mut_payload(rng, sd)
    else:
        shard = sd.shard
        desc, sidecar = _mut_packed_sidecar(rng, sd) if sd.groups is not None else _mut_sidecar(rng, sd)
        touched = set()
    touched = sd.samples_of(touched)
    if family in ("bytes", "header", "pax") and sidecar is not None and rng.random() < 0.3:
        sidecar = None
        desc += " (sidecar dropped)"
    if sd.kind == "typed":
        reads = [(m, "typed") for m in MODES]
        if rng.random() < 0.25:
            reads.append((rng.choice(MODES), "dict"))
    else:
        reads = [(m, "dict") for m in MODES]
    regroup = 0
    if (
        sd.kind == "wds"
        and family in ("header", "pax")
        and any(w in desc for w in ("name", "prefix", "path", "GNU L", "hdrcharset"))
    ):
        regroup = 2
    if (
        sd.groups is not None
        and family in ("header", "pax")
        and any(w in desc for w in ("name", "prefix", "path", "GNU L", "hdrcharset"))
    ):
        regroup = max(sd.groups) - 1  # a renamed packed member reads as one sample (a .msgpack one, say)
    vanish = len(touched) if desc.startswith("delete") else 0
    return Input(
        i,
        sd.name,
        family,
        desc,
        shard,
        sidecar,
        touched,
        len(sd.expected["dict"]),
        sd.expected,
        reads,
        vanish,
        regroup,
        eoa_data,
    )


# ---------------------------------------------------------------------------------------------------- packed
def unpack_pairs(data: bytes) -> list[list[Any]]:
    """The ``[key, payload]`` pairs of a valid packed member."""
    return list(msgpack.Unpacker(io.BytesIO(data), raw=False))


def _packed_sidecar(seed: Seed, shard: bytes) -> bytes | None:
    """A version-2 sidecar that matches a re-wrapped packed shard (every list explicit), or ``None`` when the shard's
    packed members are not valid pair streams (then no sidecar can match it)."""
    if seed.sidecar is None:
        return None
    d = json.loads(seed.sidecar)
    starts, counts, keys, sizes, lengths, poffs = [], [], [], [], [], []
    pos = 0
    try:
        while shard[pos : pos + BLOCK] != bytes(BLOCK):
            size = int(shard[pos + 124 : pos + 136].split(b"\0")[0].strip() or b"0", 8)
            data = shard[pos + BLOCK : pos + BLOCK + size]
            up = msgpack.Unpacker(io.BytesIO(data), raw=False)
            n = 0
            for k, v in up:
                end = up.tell()
                keys.append(k)
                sizes.append(len(v))
                poffs.append(pos + BLOCK + end - len(v))
                n += 1
            starts.append(pos)
            counts.append(n)
            length = BLOCK + size + (-size % BLOCK)
            lengths += [length] * n
            pos += length
    except Exception:
        return None
    d.update(size=len(shard), count=len(keys), sha256=hashlib.sha256(shard).hexdigest())
    d["packed"] = {
        "members": starts,
        "counts": counts,
        "sizes": sizes,
        "keys": keys,
        "lengths": lengths,
        "payload_offsets": poffs,
    }
    return json.dumps(d).encode()


def _mut_packed(rng: random.Random, seed: Seed) -> tuple[str, bytes, bytes | None, set[int]]:
    """One packed member's pair stream mutated, the shard re-wrapped (with a matching sidecar where one can match, or
    the seed's now stale one, or none)."""
    members = [list(m) for m in seed.members]
    j = rng.randrange(len(members))
    name, data = members[j][0]
    pairs = unpack_pairs(data)
    i = rng.randrange(len(pairs))
    k = rng.choice(["payload", "payload", "payload", "struct", "struct", "struct", "struct"])
    if k == "payload":
        desc, v = _payload_bytes(rng, pairs[i][1], seed.kind)
        pairs[i][1] = v
        new = b"".join(msgpack.packb(p, use_bin_type=True) for p in pairs)
    else:
        how = rng.choice(
            [
                "array3", "keyint", "dotkey", "emptykey", "overrun", "truncate", "trailing", "firstkey", "empty",
                "notbin", "str8key", "dupkey", "nonutf8", "bin32", "notarray",
            ]
        )  # fmt: skip
        raw = [msgpack.packb(p, use_bin_type=True) for p in pairs]
        desc = f"packed {how} @pair {i}"
        if how == "array3":
            raw[i] = msgpack.packb([*pairs[i], 1], use_bin_type=True)
        elif how == "keyint":
            raw[i] = msgpack.packb([7, pairs[i][1]], use_bin_type=True)
        elif how == "dotkey":
            raw[i] = msgpack.packb([pairs[i][0] + ".x", pairs[i][1]], use_bin_type=True)
        elif how == "emptykey":
            raw[i] = msgpack.packb(["", pairs[i][1]], use_bin_type=True)
        elif how == "overrun":
            b = bytearray(raw[i])
            b[-len(pairs[i][1]) - 1] = min(255, b[-len(pairs[i][1]) - 1] + rng.choice([1, 50]))  # bin8 length
            raw[i] = bytes(b)
        elif how == "truncate":
            raw[i] = raw[i][: rng.randrange(len(raw[i]))]
            raw = raw[: i + 1]
        elif how == "trailing":
            raw.append(rng.choice([b"\x00", b"\xc0", b"\x92", b"garbage"]))
        elif how == "firstkey":
            raw[0] = msgpack.packb(["zz" + pairs[0][0], pairs[0][1]], use_bin_type=True)
        elif how == "empty":
            raw = []
        elif how == "notbin":
            raw[i] = msgpack.packb([pairs[i][0], pairs[i][1].decode("latin-1")], use_bin_type=True)
        elif how == "str8key":  # a valid, non-canonical header: a str8 key (readers accept it)
            kb = pairs[i][0].encode()
            raw[i] = b"\x92\xd9" + bytes([len(kb)]) + kb + msgpack.packb(pairs[i][1], use_bin_type=True)
        elif how == "dupkey":
            raw[i] = msgpack.packb([pairs[0][0] if i else pairs[-1][0], pairs[i][1]], use_bin_type=True)
        elif how == "nonutf8":
            kb = b"\xff\xfe"
            raw[i] = b"\x92" + bytes([0xA0 | len(kb)]) + kb + msgpack.packb(pairs[i][1], use_bin_type=True)
        elif how == "bin32":  # valid, non-canonical: a bin32 header
            v = pairs[i][1]
            raw[i] = msgpack.packb(pairs[i][0]) + b"\xc6" + struct.pack(">I", len(v)) + v
            raw[i] = b"\x92" + raw[i]
        else:
            raw[i] = msgpack.packb({"k": pairs[i][0]}, use_bin_type=True)
        new = b"".join(raw)
    members[j][0] = (name, new)
    shard, _ = rewrap(seed, members)
    r = rng.random()
    side = _packed_sidecar(seed, shard) if r < 0.6 else (seed.sidecar if r < 0.8 else None)
    return f"payload[{j}] {desc}", shard, side, {j}


def _mut_packed_sidecar(rng: random.Random, seed: Seed) -> tuple[str, bytes]:
    """A packed shard's (version 2) sidecar edited: its packed lists lie, or the generic edits."""
    assert seed.sidecar is not None
    d = json.loads(seed.sidecar)
    p = d["packed"]
    if rng.random() < 0.3:
        with contextlib.suppress(KeyError):  # the generic edits of per-sample lists a packed sidecar has not
            return _mut_sidecar(rng, seed)
    k = rng.choice(["members", "counts", "sizes", "keys", "width", "explicit", "nopacked", "v1", "type", "count"])
    if k == "members":
        i = rng.randrange(len(p["members"]))
        p["members"][i] += rng.choice([512, -512, 1, 10**9])
    elif k == "counts":
        i = rng.randrange(len(p["counts"]))
        p["counts"][i] += rng.choice([1, -1, 100])
    elif k == "sizes":
        i = rng.randrange(len(p["sizes"]))
        p["sizes"][i] = rng.choice([0, p["sizes"][i] + 1, p["sizes"][i] - 1, 2**40])
    elif k == "keys":
        n = d["count"]
        p["keys"] = rng.choice([[f"{j:08d}" for j in range(n)], ["x"] * n, [f"k{j}" for j in range(n - 1)], 5])
    elif k == "width":
        if isinstance(p["keys"], dict):
            p["keys"][rng.choice(["start", "width"])] = rng.choice([0, 1, 3, 64, 65, -1])
    elif k == "explicit":
        n = d["count"]
        f = rng.choice(["lengths", "payload_offsets"])
        p[f] = rng.choice([[512] * n, [0] * n, [10**6] * n, [1] * (n + 1)])
    elif k == "nopacked":
        del d["packed"]
    elif k == "v1":
        d["version"] = 1
    elif k == "type":
        f = rng.choice(["members", "counts", "sizes", "keys", "lengths"])
        p[f] = rng.choice([None, "3", 3.5, {}, -1, [None], [-1], [2**70], {"start": "a"}])
    else:
        d["count"] += rng.choice([1, -1])
    return f"packed sidecar {k}", json.dumps(d).encode()


# ---------------------------------------------------------------------------------------------------- oracle
@dataclass
class ReadResult:
    """The outcome of one read of one input."""

    index: int
    mode: str
    as_type: str
    outcome: str
    exc_type: str = ""
    message: str = ""
    where: str = ""
    yielded: int = 0
    detail: str = ""


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    lib = [f for f in tb if "atdata_torch" in f.filename]
    parts = []
    if lib:
        f = lib[-1]
        parts.append(f"{f.filename.rsplit('atdata_torch', 1)[-1].lstrip('/')}:{f.lineno} {f.name}")
    if tb and (not lib or tb[-1] is not lib[-1]):
        f = tb[-1]
        parts.append(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}")
    return " <- ".join(reversed(parts)) if parts else "?"


def _do_read(path: str, mode: str, as_type: str, seed: int) -> tuple[list[Any], Any]:
    st: Any = FuzzSample if as_type == "typed" else atd.DictSample
    ds = atd.Dataset[st](path)
    out: list[Any] = []
    if mode == "default":
        for s in ds:
            out.append(s)
        return out, None
    if mode in ("raise", "skip"):
        pipe = ds.ordered(batch_size=2, on_error=mode)  # type: ignore[call-overload]
        for b in pipe:
            atd.collate(b)
            out.extend(b.samples)
        return out, pipe.last_report
    pipe = ds.shuffled(seed=seed, on_error="warn")
    for s in pipe:
        out.append(s)
    return out, pipe.last_report


def classify(
    inp: Input, mode: str, as_type: str, got: list[Any] | None, exc: BaseException | None, report: Any, warned: bool
) -> tuple[str, str]:
    """-> (outcome, detail). See the module docstring."""
    base = inp.basename
    if exc is not None:
        if isinstance(exc, atd.AtdataError):
            if base in str(exc) or (exc.shard is not None and base in exc.shard):
                return "named error", ""
            return "nameless error", ""
        return "foreign exception", ""
    assert got is not None
    key = as_type
    if as_type == "dict" and mode in ("raise", "skip"):
        key = "dict-batched"
    expected = inp.expected[key]
    have = collections.Counter(canon_sample(s, key == "dict-batched") for s in got)
    intact = collections.Counter(c for j, c in enumerate(expected) if j not in inp.touched)
    originals = set(expected)
    dup = [c for c in have if c in originals and have[c] > expected.count(c)]
    if dup:
        return "silent corruption", "a sample yielded twice"
    if len(got) > inp.n_expected + inp.regroup:
        return "silent corruption", f"{len(got)} samples from a shard of {inp.n_expected}"
    missing_untouched = intact - have
    # yielded values that are no original sample: only a touched sample may have become one
    novel = sum(n for c, n in have.items() if c not in originals)
    if novel > len(inp.touched) + inp.regroup:
        return "silent corruption", "an untouched sample differs"
    lo = inp.n_expected - inp.regroup - inp.vanish
    if lo <= len(got) <= inp.n_expected + inp.regroup and not missing_untouched:
        if inp.eoa_data and not warned:
            return "silent loss", "data after the end-of-archive marker ignored"
        return ("loss reported" if warned else "clean"), ""
    if mode in ("skip", "warn") and warned:
        r = report
        if r is not None and any(base in s for s in getattr(r, "shards", [])):
            return "loss reported", ""
        if r is not None and lo <= len(got) + r.samples <= inp.n_expected + inp.regroup:
            return "loss reported", ""
        return "miscounted loss", f"yielded {len(got)} + reported {getattr(r, 'samples', '?')} != {inp.n_expected}"
    return "silent loss", f"{len(got)} of {inp.n_expected} samples, no error{' (warned)' if warned else ''}"


def run_input(inp: Input, tmp: str, seed: int, on_start: Any = None) -> list[ReadResult]:
    """Write the input under ``tmp`` and read it every planned way (in this process)."""
    path = os.path.join(tmp, inp.basename)
    with open(path, "wb") as f:
        f.write(inp.shard)
    if inp.sidecar is not None:
        with open(path + ".idx.json", "wb") as f:
            f.write(inp.sidecar)
    results = []
    try:
        for k, (mode, as_type) in enumerate(inp.reads):
            if on_start is not None:
                on_start(k)
            got: list[Any] | None = None
            exc: BaseException | None = None
            report = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    got, report = _do_read(path, mode, as_type, seed + inp.index)
                except (Exception, RecursionError) as e:
                    exc = e
            warned = any(issubclass(w.category, atd.SkippedSamplesWarning) for w in caught)
            try:
                outcome, detail = classify(inp, mode, as_type, got, exc, report, warned)
            except Exception as e:
                outcome, detail = "harness error", f"{type(e).__name__}: {e} @ {_where(e)}"
            r = ReadResult(inp.index, mode, as_type, outcome, yielded=len(got) if got is not None else 0, detail=detail)
            if exc is not None:
                r.exc_type = type(exc).__name__
                r.message = str(exc)[:400]
                r.where = _where(exc)
            results.append(r)
            del got, exc
    finally:
        for p in (path, path + ".idx.json"):
            with contextlib.suppress(OSError):
                os.unlink(p)
    return results


# ---------------------------------------------------------------------------------------------------- workers
def _vm_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def quiet() -> None:
    """Silence the library's log lines (skip reports, ignored sidecars): the oracle reads warnings and reports."""
    logging.getLogger("atdata_torch").setLevel(logging.CRITICAL)


def _worker_main(conn: Any, seeds: list[Seed], seed: int, mem_over: int) -> None:
    import resource

    import torch  # noqa: F401 - imported once per worker, before the address-space cap

    quiet()
    warnings.simplefilter("ignore")  # a worker never turns a library warning into an error by accident
    if mem_over > 0:
        limit = _vm_bytes() + mem_over
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000))
    tmp = tempfile.mkdtemp(prefix="atdfuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    conn.send(("ready",))
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            i = msg
            inp = make_input(seeds, seed, i)
            results = run_input(inp, tmp, seed, on_start=lambda k, i=i: conn.send(("start", i, k)))
            conn.send(("done", i, results))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Worker:
    def __init__(self, ctx: Any, seeds: list[Seed], seed: int, mem_over: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, seeds, seed, mem_over), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: int | None = None
        self.read_k = -1
        self.deadline = time.monotonic() + 120.0  # start-up (imports torch)
        self.got: list[ReadResult] = []

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
        self.proc.join(5)
        with contextlib.suppress(Exception):
            self.conn.close()


# ---------------------------------------------------------------------------------------------------- report
@dataclass
class FuzzReport:
    """Counts per outcome and read mode, distinct bad signatures, and where the bad inputs were saved."""

    seed: int
    inputs: int
    seconds: float = 0.0
    counts: dict[str, collections.Counter[str]] = field(default_factory=dict)
    signatures: dict[tuple[str, ...], list[Any]] = field(default_factory=dict)  # sig -> [count, example]
    families: dict[str, collections.Counter[str]] = field(default_factory=dict)
    saved: list[str] = field(default_factory=list)

    def add(self, r: ReadResult, inp_desc: str, family: str) -> None:
        self.counts.setdefault(r.outcome, collections.Counter())[r.mode] += 1
        self.families.setdefault(r.outcome, collections.Counter())[family] += 1
        if r.outcome in BAD:
            msg = re.sub(r"\d+", "N", r.message)
            msg = re.sub(r"fzN\.tar", "SHARD", msg)[:70]
            key = r.where if r.outcome in ("foreign exception", "harness error") else r.detail
            what = re.sub(r"[@:]?-?\d+", "N", inp_desc.replace("(sidecar dropped)", "")).strip()
            what = " ".join(what.split()[:4])
            sig = (
                r.outcome,
                r.exc_type,
                msg if r.exc_type else re.sub(r"\d+", "N", r.detail),
                key if r.exc_type else f"{family}: {what}",
            )
            entry = self.signatures.setdefault(sig, [0, None, collections.Counter()])
            entry[0] += 1
            entry[2][f"{r.mode}/{r.as_type}"] += 1
            if entry[1] is None:
                entry[1] = (r.index, inp_desc, r.message[:300], r.where, r.mode, r.as_type)

    @property
    def bad(self) -> int:
        return sum(sum(self.counts.get(c, {}).values()) for c in BAD)

    def markdown(self, top: int = 12) -> str:
        reads = sum(sum(c.values()) for c in self.counts.values())
        lines = [
            f"fuzz run: seed={self.seed} inputs={self.inputs} reads={reads} "
            f"time={self.seconds:.1f}s ({self.inputs / max(self.seconds, 1e-9):.1f} inputs/s)",
            "",
            "| outcome | reads | default | raise | skip | warn |",
            "|---|---|---|---|---|---|",
        ]
        for c in CLASSES:
            cnt = self.counts.get(c, collections.Counter())
            name = f"**{c}**" if c in BAD and sum(cnt.values()) else c
            lines.append(f"| {name} | {sum(cnt.values())} | " + " | ".join(str(cnt[m]) for m in MODES) + " |")
        for c in BAD:
            sigs = sorted(((v[0], k, v) for k, v in self.signatures.items() if k[0] == c), key=lambda t: -t[0])
            if not sigs:
                continue
            fams = ", ".join(f"{f} {n}" for f, n in self.families[c].most_common())
            lines += ["", f"### {c} ({len(sigs)} distinct; by family: {fams})", ""]
            for n, k, v in sigs[:top]:
                idx, desc, msg, _, mode, as_type = v[1]
                modes = ", ".join(f"{m} {x}" for m, x in v[2].most_common())
                head = f"{k[1]}: {k[2]}" if k[1] else k[2]
                lines.append(f"- **{n}x** `{head}` at `{k[3]}` [{modes}]")
                lines.append(f"  - e.g. input {idx} ({desc}), {mode}/{as_type}" + (f": `{msg[:160]}`" if msg else ""))
            if len(sigs) > top:
                lines.append(f"- ... {len(sigs) - top} more")
        return "\n".join(lines)


def _save(out: str, cls: str, inp: Input, r: ReadResult, seed: int) -> str:
    d = os.path.join(out, cls.replace(" ", "_"), f"{inp.index:07d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, inp.basename), "wb") as f:
        f.write(inp.shard)
    if inp.sidecar is not None:
        with open(os.path.join(d, inp.basename + ".idx.json"), "wb") as f:
            f.write(inp.sidecar)
    info = {
        "seed": seed,
        "index": inp.index,
        "seed_shard": inp.seed_name,
        "family": inp.family,
        "mutation": inp.desc,
        "touched_samples": sorted(inp.touched),
        "samples": inp.n_expected,
        "read": {"mode": r.mode, "as": r.as_type},
        "outcome": r.outcome,
        "exception": r.exc_type,
        "message": r.message,
        "where": r.where,
        "detail": r.detail,
        "replay": f"python benchmarks/fuzz.py --seed {seed} --replay {inp.index}",
    }
    with open(os.path.join(d, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    return d


def run_fuzz(
    seed: int = 0,
    inputs: int = 2000,
    jobs: int = 2,
    out: str | None = None,
    read_timeout: float = 10.0,
    mem_over: int = 4 << 30,
    save_per_class: int = 5,
    progress: bool = False,
    start: int = 0,
) -> FuzzReport:
    """Run inputs ``[start, start + inputs)`` of the seeded fuzz on ``jobs`` worker processes; see the module doc."""
    t0 = time.monotonic()
    seeds = build_seeds()
    ctx = multiprocessing.get_context("spawn")
    report = FuzzReport(seed, inputs)
    saved_per: collections.Counter[str] = collections.Counter()
    todo = list(range(start, start + inputs))
    todo.reverse()
    workers = [_Worker(ctx, seeds, seed, mem_over) for _ in range(max(1, jobs))]
    done = 0
    last_print = time.monotonic()

    def record(inp: Input | None, i: int, rs: list[ReadResult]) -> None:
        if inp is None:
            inp = make_input(seeds, seed, i)
        for r in rs:
            report.add(r, inp.desc, inp.family)
            if r.outcome in BAD and out is not None and saved_per[r.outcome] < save_per_class:
                saved_per[r.outcome] += 1
                report.saved.append(_save(out, r.outcome, inp, r, seed))

    def fail(w: _Worker, outcome: str, why: str) -> None:
        assert w.task is not None
        inp = make_input(seeds, seed, w.task)
        k = max(w.read_k, 0)
        rs = list(w.got)
        mode, as_type = inp.reads[k]
        rs.append(ReadResult(inp.index, mode, as_type, outcome, exc_type="", message="", where="", detail=why))
        record(inp, w.task, rs)

    try:
        while done < inputs:
            for w in workers:
                if w.ready and w.task is None and todo:
                    w.task = todo.pop()
                    w.read_k = -1
                    w.got = []
                    w.deadline = time.monotonic() + read_timeout
                    w.conn.send(w.task)
            busy = [w for w in workers if w.task is not None or not w.ready]
            if not busy:
                break
            now = time.monotonic()
            timeout = max(0.0, min(w.deadline for w in busy) - now)
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=timeout)
            for w in busy:
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is None:
                        w.proc.join(2)
                        code = w.proc.exitcode
                        if w.task is not None:
                            fail(w, "crash", f"worker died (exit code {code})")
                            done += 1
                        elif not w.ready:
                            raise RuntimeError(f"fuzz worker failed to start (exit code {code})")
                        workers[workers.index(w)] = _respawn(w, ctx, seeds, seed, mem_over)
                        continue
                    if msg[0] == "ready":
                        w.ready = True
                    elif msg[0] == "start":
                        w.read_k = msg[2]
                        w.deadline = time.monotonic() + read_timeout
                    elif msg[0] == "done":
                        record(None, msg[1], msg[2])
                        w.task = None
                        done += 1
                elif time.monotonic() > w.deadline:
                    if w.task is not None:
                        fail(w, "hang", f"read did not finish in {read_timeout:.0f}s")
                        done += 1
                    workers[workers.index(w)] = _respawn(w, ctx, seeds, seed, mem_over)
            if progress and time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                el = last_print - t0
                print(
                    f"  {done}/{inputs} inputs, {el:.0f}s, {done / el:.1f}/s, bad reads {report.bad}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for w in workers:
            with contextlib.suppress(Exception):
                w.conn.send(None)
        for w in workers:
            w.proc.join(2)
            if w.proc.is_alive():
                w.kill()
    report.seconds = time.monotonic() - t0
    return report


def _respawn(w: _Worker, ctx: Any, seeds: list[Seed], seed: int, mem_over: int) -> _Worker:
    w.kill()
    return _Worker(ctx, seeds, seed, mem_over)


def replay(seed: int, i: int) -> tuple[Input, list[ReadResult]]:
    """Run one input in this process (for debugging a saved finding)."""
    quiet()
    seeds = build_seeds()
    inp = make_input(seeds, seed, i)
    tmp = tempfile.mkdtemp(prefix="atdfuzz-")
    try:
        return inp, run_input(inp, tmp, seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
