"""Shared fixtures for the atdata_torch tests."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# ------------------------------------------------------------------------------------------------
# tar building helpers (format tests)

TarMember = tuple[str, bytes]


def _write_tar(
    path: Path,
    members: Sequence[TarMember],
    fmt: int = tarfile.USTAR_FORMAT,
    *,
    pax_headers: dict[str, dict[str, str]] | None = None,
    global_pax: dict[str, str] | None = None,
    mtime: float = 1_700_000_000,
) -> Path:
    """Write ``members`` (name, data) with :mod:`tarfile` in the given format.

    ``pax_headers`` maps a member name to extra PAX records for it (PAX format only);
    ``global_pax`` adds a global (``g``) PAX header at the start of the archive.
    """
    kwargs = {"format": fmt}
    if global_pax is not None:
        kwargs["pax_headers"] = global_pax
    with tarfile.open(path, "w", **kwargs) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            if pax_headers and name in pax_headers:
                info.pax_headers = dict(pax_headers[name])
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def tar_factory(tmp_path: Path) -> Callable[..., Path]:
    """``tar_factory(name, members, fmt=USTAR_FORMAT, pax_headers=None, global_pax=None)`` -> path.

    Writes a tar with :mod:`tarfile` under ``tmp_path`` (``members``: a list of ``(name, bytes)``).
    """

    def make(name: str, members: Sequence[TarMember], fmt: int = tarfile.USTAR_FORMAT, **kw: object) -> Path:
        return _write_tar(tmp_path / name, members, fmt, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def wds_tar_factory(tmp_path: Path) -> Callable[[str, Sequence[dict[str, object]]], Path]:
    """``wds_tar_factory(name, samples)`` -> path: a tar written by ``webdataset.TarWriter`` (PAX
    headers; the original atdata's writer). Each sample is a dict with ``__key__`` and extension ->
    value entries."""
    import webdataset as wds

    def make(name: str, samples: Sequence[dict[str, object]]) -> Path:
        path = tmp_path / name
        with wds.TarWriter(str(path)) as w:
            for s in samples:
                w.write(dict(s))
        return path

    return make


# ------------------------------------------------------------------------------------------------
# datasets written with the library's own writer (dataset / pipeline / lens / error tests)


@pytest.fixture
def write_dataset(tmp_path: Path) -> Callable[..., object]:
    """``write_dataset(samples, name="train.tar", maxcount=None, sidecar=True)`` -> ``Dataset``.

    Writes the samples under ``tmp_path`` with :func:`atdata_torch.write_samples` (with
    ``maxcount`` the shards are ``<stem>-000000.tar``, ``-000001``, ...) and returns the dataset
    over them, typed like the first sample.
    """
    import atdata_torch as atd

    def make(
        samples: Sequence[object],
        name: str = "train.tar",
        *,
        maxcount: int | None = None,
        sidecar: bool = True,
    ) -> object:
        return atd.write_samples(list(samples), tmp_path / name, maxcount=maxcount, sidecar=sidecar, progress=False)

    return make


@pytest.fixture
def tar_bytes() -> Callable[[Sequence[tuple[str, bytes]]], bytes]:
    """``tar_bytes([(member name, data), ...])`` -> the bytes of a shard laid out as the library
    writes them (ustar headers, padded data, end-of-archive record), for hand-made samples."""
    from atdata_torch._tar import end_of_archive, member_bytes

    def make(members: Sequence[tuple[str, bytes]]) -> bytes:
        body = b"".join(member_bytes(name, data) for name, data in members)
        return body + end_of_archive(len(body))

    return make


def _read_with_webdataset(url: str) -> list[dict[str, object]]:
    """Iterate ``webdataset.WebDataset(url, shardshuffle=False)`` to a list of raw samples.

    webdataset leaves its shard files for the garbage collector to close; the resulting
    ResourceWarnings are silenced here (and collected inside the block), as pytest turns warnings
    into errors.
    """
    import gc
    import warnings

    import webdataset as wds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        pipeline = wds.WebDataset(url, shardshuffle=False)
        items = [dict(x) for x in pipeline]
        del pipeline
        gc.collect()
    return items


@pytest.fixture
def wds_read() -> Callable[[str], list[dict[str, object]]]:
    """``wds_read(url)``: the samples of ``webdataset.WebDataset(url, shardshuffle=False)``."""
    return _read_with_webdataset
