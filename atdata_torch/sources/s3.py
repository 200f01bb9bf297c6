"""S3-compatible object stores (AWS, MinIO, R2, moto) through boto3 (the ``s3`` extra).

Example:
    >>> src = S3Source(bucket="b", keys=["data-000000.tar"], endpoint="http://127.0.0.1:9000",
    ...                access_key="AKIA...", secret_key="hunter2")
    >>> "hunter2" in repr(src)
    False
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import IO, Any

from .._redaction import redact as _redact
from ..errors import MissingDependencyError, ShardNotFoundError, SourceError
from ._base import as_shard_list
from ._policy import Pace, TransientError, request_deadline
from ._remote import RemoteSource

__all__ = ["S3Source"]

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})
_DENIED = frozenset(
    {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
_TRANSIENT = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "500", "502", "503", "504", "429"}
)


def _boto3() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise MissingDependencyError.for_extra("boto3", "s3", "S3 sources") from exc
    return boto3


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key/with/slashes`` -> ``("bucket", "key/with/slashes")``.

    Example:
        >>> parse_s3_url("s3://b/data/train-000000.tar")
        ('b', 'data/train-000000.tar')
    """
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"an s3 URL needs a bucket and a key: {url!r}")
    return bucket, key


class S3Source(RemoteSource):
    """Shards in one S3 bucket: streaming ``get_object`` with ranges, listing a prefix, custom endpoints, botocore
    retries plus resume of broken transfers, concurrency across shards, and one client per worker process
    (boto3 clients are not fork-safe). Credentials come from the arguments or the usual boto3 chain (environment,
    profile, instance role); they never appear in reprs, logs or errors.

    Args:
        bucket: The bucket.
        keys: Object keys of the shards, in order.
        endpoint: A custom endpoint URL (MinIO, R2, moto), or ``None`` for AWS.
        access_key: Access key id (``None``: the boto3 chain).
        secret_key: Secret access key.
        session_token: Session token, if any.
        region: Region name.
        profile: A boto3 profile name.
        timeout: Connect and read timeout in seconds (a stalled endpoint counts as a transient failure).
        **kwargs: ``cache``, ``retries``, ``backoff``, ``max_concurrency``, ``readahead``, ``chunk_size``,
            ``parallel`` (see RemoteSource: ranged ``get_object`` calls in parallel for large objects),
            ``checksums``, ``deadline``, ``sidecar_deadline``, ``min_rate``, ``max_retry_after``. (Each read
            returns what botocore gives, so the minimum rate is checked per read, not per receive.)
    """

    def __init__(
        self,
        bucket: str,
        keys: str | list[str],
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        *,
        session_token: str | None = None,
        profile: str | None = None,
        timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _boto3()  # fail early, naming the extra
        self.bucket = bucket
        self.keys = as_shard_list(keys, "S3Source keys")
        self.endpoint = endpoint
        self.region = region
        self.profile = profile
        self.timeout = timeout
        self.__credentials = (access_key, secret_key, session_token)

    # The original atdata's attributes (read-only here: the credentials are fixed when the client is made). The
    # secret is readable, as it was there, but never part of a repr, a log line or an error.
    @property
    def access_key(self) -> str | None:
        """The access key id given (``None``: the boto3 chain)."""
        return self.__credentials[0]

    @property
    def secret_key(self) -> str | None:
        """The secret access key given (never shown in reprs, logs or errors)."""
        return self.__credentials[1]

    @property
    def session_token(self) -> str | None:
        """The session token given, if any."""
        return self.__credentials[2]

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[str, str], bucket: str, keys: str | list[str], **kwargs: Any
    ) -> S3Source:
        """Build from a credentials dict in the original atdata's form: ``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT`` (or ``AWS_ENDPOINT_URL``) and
        ``AWS_REGION``. ``kwargs`` are the other options (``retries=``, ``cache=``, ...).

        Example:
            >>> creds = {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
            ...          "AWS_ENDPOINT": "http://127.0.0.1:9000"}
            >>> src = S3Source.from_credentials(creds, "b", ["data.tar"])
            >>> src.access_key, src.endpoint, "s3cr3t" in repr(src)
            ('AKIA1', 'http://127.0.0.1:9000', False)
        """
        return cls(
            bucket,
            keys,
            endpoint=credentials.get("AWS_ENDPOINT") or credentials.get("AWS_ENDPOINT_URL"),
            access_key=credentials.get("AWS_ACCESS_KEY_ID"),
            secret_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
            region=credentials.get("AWS_REGION"),
            session_token=credentials.get("AWS_SESSION_TOKEN"),
            **kwargs,
        )

    @classmethod
    def from_urls(cls, urls: str | list[str], **kwargs: Any) -> S3Source:
        """Build from ``s3://bucket/key`` URLs (all in one bucket; one string is brace-expanded). ``kwargs``:
        ``endpoint=``, ``access_key=``, ``secret_key=``, ``region=`` (as in the original) and our options."""
        urls = as_shard_list(urls, "S3Source.from_urls")
        if not urls:
            raise ValueError("S3Source.from_urls needs at least one s3://bucket/key URL, got none")
        parsed = [parse_s3_url(u) for u in urls]
        buckets = {b for b, _ in parsed}
        if len(buckets) != 1:
            raise ValueError(f"S3Source.from_urls needs URLs in one bucket, got {sorted(buckets)}")
        return cls(buckets.pop(), [k for _, k in parsed], **kwargs)

    @classmethod
    def from_prefix(cls, bucket: str, prefix: str = "", *, suffix: str = ".tar", **kwargs: Any) -> S3Source:
        """List the objects under ``prefix`` that end with ``suffix`` (sorted) and read them as shards."""
        src = cls(bucket, [], **kwargs)
        src.keys = src.list_prefix(prefix, suffix=suffix)
        return src

    def list_prefix(self, prefix: str = "", *, suffix: str = ".tar") -> list[str]:
        """Keys under ``prefix`` ending with ``suffix``, sorted."""
        client = self._client()
        out: list[str] = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                out.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(suffix))
        except Exception as exc:
            raise self._translate(exc, f"s3://{self.bucket}/{prefix}") from exc
        return sorted(out)

    def list_shards(self) -> list[str]:
        return [f"s3://{self.bucket}/{k}" for k in self.keys]

    def _client(self) -> Any:
        return self._per_process("s3", self._new_client)

    def _new_client(self) -> Any:
        boto3 = _boto3()
        from botocore.config import Config

        access, secret, token = self.__credentials
        session = boto3.session.Session(profile_name=self.profile) if self.profile else boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            aws_session_token=token,
            config=Config(
                retries={"max_attempts": self.retries + 1, "mode": "standard"},
                max_pool_connections=self.max_concurrency + 2,
                connect_timeout=self.timeout,
                read_timeout=self.timeout,
            ),
        )

    def _translate(self, exc: Exception, shard: str) -> Exception:
        code = ""
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            if not code:
                code = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND:
            return ShardNotFoundError(f"{shard!r} does not exist in S3 ({code}); check the bucket and key", shard=shard)
        if code in _DENIED:
            return SourceError(
                f"access to {shard!r} was refused by S3 ({code}); check the credentials (arguments, environment or "
                "profile) and the bucket policy",
                shard=shard,
            )
        if code in _TRANSIENT or type(exc).__name__ in (
            "EndpointConnectionError",
            "ConnectionClosedError",
            "ReadTimeoutError",
            "ConnectTimeoutError",
            "IncompleteReadError",
            "ResponseStreamingError",
            "ProtocolError",
        ):
            return TransientError(f"{type(exc).__name__}: {code or exc}")
        return SourceError(f"S3 request for {shard!r} failed ({type(exc).__name__}: {code or 'error'})", shard=shard)

    def _key_of(self, shard: str) -> str:
        bucket, key = parse_s3_url(shard)
        if bucket != self.bucket:
            raise ValueError(f"{shard!r} is not in bucket {self.bucket!r}")
        return key

    def _open_range(self, shard: str, start: int, end: int | None = None) -> tuple[IO[bytes], int | None]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key_of(shard)}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        until = request_deadline()
        if until is not None and time.monotonic() >= until:
            raise TransientError("the request's deadline passed before it was sent")
        try:
            resp = self._client().get_object(**kwargs)
        except Exception as exc:
            raise self._translate(exc, shard) from exc
        total: int | None = None
        cr = resp.get("ContentRange")
        if cr and "/" in cr and cr.rsplit("/", 1)[1].isdigit():
            total = int(cr.rsplit("/", 1)[1])
        elif resp.get("ContentLength") is not None:
            total = int(resp["ContentLength"]) + start
        pace = Pace(until, self.min_rate, self.timeout, shard) if until is not None or self.min_rate else None
        return _Body(resp["Body"], self, shard, pace), total  # type: ignore[return-value]

    def __repr__(self) -> str:
        ep = f", endpoint={_redact(self.endpoint)!r}" if self.endpoint else ""
        return f"S3Source(bucket={self.bucket!r}, {len(self.keys)} shards{ep})"


class _Body:
    """A botocore StreamingBody whose read errors become TransientError / SourceError."""

    def __init__(self, body: Any, src: S3Source, shard: str, pace: Pace | None = None) -> None:
        self._body = body
        self._src = src
        self._shard = shard
        self._pace = pace  # the request's deadline and minimum rate, checked after every read

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._body.read(n)
        except Exception as exc:
            raise self._src._translate(exc, self._shard) from exc
        if self._pace is not None:
            self._pace.got(len(data))
        return data

    def close(self) -> None:
        self._body.close()
