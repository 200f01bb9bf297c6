"""Shared fixtures for the atdata_torch tests."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from http_server import FaultServer

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
    from atdata_torch._tarwrite import end_of_archive, member_bytes

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


# ------------------------------------------------------------------------------------------------
# services: a real HTTP server (remote sources), and the skip-or-fail policy for external ones


def services_required() -> bool:
    """``ATDATA_TORCH_REQUIRE_SERVICES=1``: a missing service fails the tests that need it instead of skipping."""
    return os.environ.get("ATDATA_TORCH_REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes"}


def require_service(name: str, reason: str) -> NoReturn:
    """Skip the calling test because service ``name`` is unavailable (``reason``), or fail it under
    ``ATDATA_TORCH_REQUIRE_SERVICES=1`` (CI)."""
    msg = f"{name} is unavailable: {reason}"
    if services_required():
        pytest.fail(f"{msg} (ATDATA_TORCH_REQUIRE_SERVICES=1 makes this a failure)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def http_root(tmp_path: Path) -> Path:
    """The directory the ``http_server`` fixture serves."""
    root = tmp_path / "www"
    root.mkdir()
    return root


@pytest.fixture
def http_server(http_root: Path) -> Iterator[FaultServer]:
    """A :class:`http_server.FaultServer` on 127.0.0.1 serving ``http_root`` (Range requests, fault injection,
    a request log); stopped after the test."""
    from http_server import FaultServer

    with FaultServer(http_root) as srv:
        yield srv


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on 127.0.0.1 (S3 and IAM; one server per session): yields its endpoint URL.

    Skips the tests that use it when moto cannot start (fails them under ``ATDATA_TORCH_REQUIRE_SERVICES=1``).
    """
    import logging

    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        require_service("moto", f"moto[server] is not installed ({exc})")
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
        host, port = server.get_host_and_port()
    except Exception as exc:
        werkzeug.setLevel(level)
        require_service("moto", f"the moto server did not start ({type(exc).__name__}: {exc})")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """An isolated AWS environment: fake credentials and region in the environment, no config files, no instance
    metadata lookups. Returns the variables set."""
    from remote_data import MOTO_ACCESS_KEY, MOTO_SECRET_KEY

    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(var, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def s3_upload(moto_endpoint: str, aws_env: dict[str, str]) -> Iterator[Callable[..., str]]:
    """``s3_upload(files, prefix="", bucket=None)`` -> bucket: uploads local files (and their ``.idx.json``
    sidecars when present) to a new bucket on the moto server as ``<prefix><file name>``."""
    import uuid

    from remote_data import moto_s3_client

    client = moto_s3_client(moto_endpoint)

    def upload(files: Sequence[Path], prefix: str = "", bucket: str | None = None) -> str:
        if bucket is None:
            bucket = f"atd-{uuid.uuid4().hex[:12]}"
            client.create_bucket(Bucket=bucket)
        for f in files:
            for p in (Path(f), Path(str(f) + ".idx.json")):
                if p.exists():
                    client.put_object(Bucket=bucket, Key=prefix + p.name, Body=p.read_bytes())
        return bucket

    yield upload
    client.close()


@pytest.fixture(scope="session")
def atproto_net() -> Iterator[dict[str, object]]:
    """A real PLC directory + PDS on loopback (``tests/pds``), one per session, with accounts alice, bob and carol
    (``<name>.test`` / ``<name>-pass``) and a 16 MiB blob limit: yields the launcher's info dict (``pdsUrl``,
    ``plcUrl``, ``accounts``).

    Installs the npm packages on first use (about 90 s, cached by lockfile hash); skips when node/npm are missing
    (fails under ``ATDATA_TORCH_REQUIRE_SERVICES=1``).
    """
    from local_pds import LocalPDS, default_prefix, ensure_installed, missing_tools

    missing = missing_tools()
    if missing:
        require_service("local PDS", f"{', '.join(missing)} not found on PATH")
    prefix = default_prefix()
    try:
        ensure_installed(prefix)
    except Exception as exc:
        require_service("local PDS", str(exc))
    net = LocalPDS(seed_accounts=["alice", "bob", "carol"], blob_upload_limit=16 << 20, prefix=prefix)
    try:
        info = net.start()
    except Exception as exc:
        require_service("local PDS", f"it did not start: {exc}")
    try:
        yield info
    finally:
        net.stop()


# ------------------------------------------------------------------------------------------------
# the original atdata (0.7.0b1, Python >= 3.12) in its own virtualenv, for cross-library tests (c17m)


@pytest.fixture(scope="session")
def original_atdata() -> object:
    """An :class:`original_atdata.OriginalAtdata`: runs scripts (JSON in, JSON out) under the original atdata, in a
    virtualenv cached outside the clone (created on first use: a few seconds with uv). Skips where no Python >= 3.12
    is found (fails under ``ATDATA_TORCH_REQUIRE_SERVICES=1``)."""
    from original_atdata import OriginalAtdata, OriginalUnavailable, ensure_env

    try:
        return OriginalAtdata(ensure_env())
    except OriginalUnavailable as exc:
        require_service("original atdata", str(exc))


# ------------------------------------------------------------------------------------------------
# the process-wide default index (get_default_index / set_default_index) never outlives the test that set it: the
# README's index example (run by test_examples) sets one, and load_dataset("name") without index= reads it


@pytest.fixture(autouse=True)
def _reset_default_index() -> Iterator[None]:
    from atdata_torch.index import _default

    saved = _default._default_index
    yield
    _default._default_index = saved
