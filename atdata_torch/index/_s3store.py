"""The original atdata's ``S3DataStore``: an index data store that writes shards to an S3-compatible bucket.

Shards are written locally with our :class:`~atdata_torch.ShardWriter` (one at a time, in a temporary directory)
and uploaded with boto3 (the ``s3`` extra) beside their index sidecars (and manifests with ``manifest=True``), as
``s3://<bucket>/<prefix>/data--<uuid4>--%06d.tar``, the original's layout. The original wrote through s3fs; here
boto3 does, through the same client and error translation as :class:`~atdata_torch.sources.S3Source`.

Example:
    >>> store = S3DataStore({"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
    ...                      "AWS_ENDPOINT": "http://127.0.0.1:9000"}, bucket="lab")
    >>> "s3cr3t" in repr(store), store.read_url("s3://lab/x/a.tar")
    (False, 'http://127.0.0.1:9000/lab/x/a.tar')
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._redaction import redact as _redact
from ..errors import ConfigError, SourceError
from ..sources.s3 import S3Source
from ._stores import ShardWriteResult, sha256_file

__all__ = ["S3DataStore", "read_env_file"]

_KEY_ID, _SECRET = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
_SUFFIXES = (".idx.json", ".manifest.json", ".manifest.parquet")  # uploaded beside each shard when present


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file (``export``, quotes and ``#`` comments allowed), as the original read
    its credentials file with python-dotenv.

    Raises:
        ConfigError: the file cannot be read, or it lacks ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the S3 credentials file {os.fspath(path)!r}: {exc.strerror}") from exc
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        env[key.strip()] = value
    missing = [k for k in (_KEY_ID, _SECRET) if k not in env]
    if missing:
        raise ConfigError(
            f"the S3 credentials file {os.fspath(path)!r} lacks {', '.join(missing)}; add them as KEY=VALUE lines "
            "(AWS_ENDPOINT too for a non-AWS endpoint)"
        )
    return env


class S3DataStore:
    """Shards in an S3-compatible bucket (AWS, MinIO, R2, moto): the original's ``S3DataStore(credentials, *,
    bucket)``, an :class:`~atdata_torch.index.AbstractDataStore` for ``Index(data_store=...)``.

    Args:
        credentials: A dict with ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and optionally ``AWS_ENDPOINT``
            (or ``AWS_ENDPOINT_URL``), ``AWS_REGION``, ``AWS_SESSION_TOKEN``; or the path of a ``.env`` file with
            them. A dict without keys uses boto3's usual chain (environment, profile, instance role).
        bucket: The bucket (it must exist).

    The credentials never appear in a repr, a log line or an error.
    """

    def __init__(self, credentials: str | os.PathLike[str] | Mapping[str, Any], *, bucket: str) -> None:
        creds = dict(credentials) if isinstance(credentials, Mapping) else read_env_file(credentials)
        if (_KEY_ID in creds) != (_SECRET in creds):
            raise ConfigError(
                "S3DataStore credentials need both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or neither, for "
                f"boto3's credential chain); got only {_KEY_ID if _KEY_ID in creds else _SECRET}"
            )
        if not bucket or "/" in bucket:
            raise ConfigError(f"S3DataStore needs a bucket name without '/', got {bucket!r}")
        self.__credentials = {str(k): str(v) for k, v in creds.items()}
        self.bucket = bucket
        self._source = S3Source.from_credentials(self.__credentials, bucket, [])

    @property
    def credentials(self) -> dict[str, str]:
        """A copy of the credentials given (the original's attribute; never shown in reprs or errors)."""
        return dict(self.__credentials)

    @property
    def endpoint(self) -> str | None:
        """The custom endpoint URL, or ``None`` for AWS."""
        return self._source.endpoint

    def __repr__(self) -> str:
        ep = f", endpoint={_redact(self.endpoint)!r}" if self.endpoint else ""
        return f"S3DataStore(bucket={self.bucket!r}{ep})"

    def source_options(self) -> dict[str, Any]:
        """Options that read this store's shards: ``Dataset(urls, **store.source_options())``."""
        c = self.__credentials
        opts = {"endpoint": self.endpoint, "access_key": c.get(_KEY_ID), "secret_key": c.get(_SECRET)}
        opts.update(region=c.get("AWS_REGION"), session_token=c.get("AWS_SESSION_TOKEN"))
        return {k: v for k, v in opts.items() if v is not None}

    def write_shards(
        self,
        ds: Any,
        *,
        prefix: str,
        cache_local: bool = False,
        manifest: bool = False,
        maxcount: int | None = None,
        maxsize: int | None = None,
        **kwargs: Any,
    ) -> ShardWriteResult:
        """Write every sample of ``ds`` (in order) as shards under ``s3://<bucket>/<prefix>/``.

        Args:
            ds: A ``Dataset`` (or any iterable of ``@packable`` samples).
            prefix: The key prefix (``"mnist/v1"``).
            cache_local: Accepted for the original's signature: shards are always staged locally, one at a time.
            manifest: Also upload ``<shard>.manifest.json`` / ``.manifest.parquet`` (the ``arrow`` extra).
            maxcount: Samples per shard (``None``: one shard unless ``maxsize`` splits it).
            maxsize: Bytes per shard.
            **kwargs: The original's manifest provenance options (``schema_version``, ...); ignored.

        Returns:
            The ``s3://`` URLs, with each shard's SHA-256 in ``.checksums`` (the original filled them only with
            ``cache_local=True``).

        Raises:
            SourceError: an upload failed (naming the object, the S3 error code and the fix), or ``ds`` has no
                samples.
        """
        from .. import ShardWriter

        prefix = prefix.strip("/")
        uploaded: list[str] = []
        with tempfile.TemporaryDirectory(prefix="atdata-torch-s3-") as tmp:
            writer = ShardWriter(
                os.path.join(tmp, f"data--{uuid.uuid4()}--%06d.tar"), maxcount=maxcount, maxsize=maxsize,
                manifest=manifest, fsync=False,
            )  # fmt: skip
            samples = ds.ordered(rank=0, world_size=1) if hasattr(ds, "ordered") else ds
            checksums: dict[str, str] = {}
            try:
                for sample in samples:
                    writer.write(sample)
                    self._upload_done(writer.shards, uploaded, prefix, checksums)
            except BaseException:
                writer.abort()
                raise
            writer.close()
            self._upload_done(writer.shards, uploaded, prefix, checksums)
        if not uploaded:
            raise SourceError(
                f"S3DataStore.write_shards(prefix={prefix!r}): the dataset has no samples, so nothing was written "
                f"to s3://{self.bucket}/{prefix}/; pass a dataset with at least one sample"
            )
        return ShardWriteResult(uploaded, checksums)

    def _upload_done(self, shards: list[str], uploaded: list[str], prefix: str, checksums: dict[str, str]) -> None:
        """Upload the finished shards not yet uploaded (and their sidecars), then delete the local copies."""
        for path in shards[len(uploaded) :]:
            url = f"s3://{self.bucket}/{prefix}/{os.path.basename(path)}"
            checksums[url] = sha256_file(path)
            stem = path[: -len(".tar")]
            extras = [(p, url + p[len(path) :]) for p in (path + ".idx.json",) if os.path.exists(p)]
            extras += [(stem + s, url[: -len(".tar")] + s) for s in _SUFFIXES[1:] if os.path.exists(stem + s)]
            for local, remote in [*extras, (path, url)]:  # the shard last: once it exists, so do its sidecars
                self._put(local, remote)
                os.unlink(local)
            uploaded.append(url)

    def _put(self, local: str, url: str) -> None:
        key = url[len(f"s3://{self.bucket}/") :]
        try:
            self._source._client().upload_file(local, self.bucket, key)
        except Exception as exc:
            inner = exc if hasattr(exc, "response") else (exc.__cause__ or exc.__context__ or exc)
            err = self._source._translate(inner if isinstance(inner, Exception) else exc, url)
            why = getattr(err, "message", None) or f"{type(exc).__name__}"
            raise SourceError(
                f"S3DataStore could not upload {url!r}: {why}; check that bucket {self.bucket!r} exists and that "
                "the credentials may write to it",
                shard=url,
            ) from exc

    def read_url(self, url: str) -> str:
        """The original's rule: with a custom endpoint, ``s3://bucket/key`` -> ``<endpoint>/bucket/key`` (a plain
        HTTP URL, readable where the bucket is public); without one, the URL unchanged."""
        if self.endpoint and url.startswith("s3://"):
            return f"{self.endpoint.rstrip('/')}/{url[len('s3://') :]}"
        return url

    def supports_streaming(self) -> bool:
        """Always ``True``."""
        return True
