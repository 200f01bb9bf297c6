"""The Ray Data datasink of :func:`atdata_torch.integrations.ray.write_atdata`: staged shards, committed at the end.

Each write task writes whole shards under ``<dir>/.atdata-staging-<id>/task-<task index>/`` (for ``s3://``: written
to a local temporary directory, then uploaded under that staging prefix). A retried task first removes what an
earlier attempt of the same task index left there, so it overwrites only its own files. When every task has
succeeded, ``on_write_complete`` renames (S3: copies, then deletes) the staged shards and their sidecars to their
final, globally numbered names (``train-000000.tar``, ...), in task order. ``on_write_failed`` removes the staging
files; nothing is ever written under a final name before the commit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from typing import Any

from ray.data.block import BlockAccessor
from ray.data.datasource import Datasink

from .._arrow import columns_to_samples, table_to_columns
from .._shards import shard_name
from .._sidecar import SIDECAR_SUFFIX
from ..errors import AtdataError, MissingDependencyError
from ..writer import ShardWriter
from ._ray_read import from_ray_tensor

__all__ = ["AtdataDatasink"]


class _Local:
    """Staging and commit in a local directory (``os.replace``: atomic on one file system)."""

    def __init__(self, path: str, token: str) -> None:
        self.path = os.path.abspath(path)
        self.dir = os.path.dirname(self.path)
        self.staging = os.path.join(self.dir, f".atdata-staging-{token}")

    def task_dir(self, task: int) -> str:
        d = os.path.join(self.staging, f"task-{task:06d}")
        shutil.rmtree(d, ignore_errors=True)  # an earlier attempt of this task: only its own files
        os.makedirs(d)
        return d

    def publish(self, task: int, shards: list[str]) -> list[str]:
        return shards

    def finish_task(self, local_dir: str) -> None:
        pass

    def move(self, staged: str, final: str) -> None:
        os.replace(staged + SIDECAR_SUFFIX, final + SIDECAR_SUFFIX)
        os.replace(staged, final)

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def existing(self, pattern: re.Pattern[str]) -> list[str]:
        if not os.path.isdir(self.dir):
            return []
        return sorted(os.path.join(self.dir, n) for n in os.listdir(self.dir) if pattern.fullmatch(n))


class _S3:
    """Staging and commit under an S3 prefix (copy to the final key, then delete the staged object)."""

    def __init__(self, path: str, token: str, options: dict[str, Any]) -> None:
        bucket, _, key = path[len("s3://") :].partition("/")
        if not bucket or not key:
            raise ValueError(f"write_atdata needs s3://bucket/prefix/name.tar, got {path!r}")
        self.bucket, self.key = bucket, key
        self.prefix = key.rpartition("/")[0]
        self.staging = f"{self.prefix}/.atdata-staging-{token}" if self.prefix else f".atdata-staging-{token}"
        self.endpoint = options.pop("endpoint", None)
        self.region = options.pop("region", None)
        self.profile = options.pop("profile", None)
        self.__credentials = (options.pop("access_key", None), options.pop("secret_key", None))
        if options:
            raise TypeError(
                f"write_atdata got unknown S3 options {sorted(options)}; known: endpoint, region, "
                "profile, access_key, secret_key"
            )
        self._client_: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client_"] = None
        return state

    def client(self) -> Any:
        if self._client_ is None:
            try:
                import boto3
            except ImportError as exc:
                raise MissingDependencyError.for_extra("boto3", "s3", "write_atdata to s3://") from exc
            access, secret = self.__credentials
            session = boto3.session.Session(profile_name=self.profile) if self.profile else boto3.session.Session()
            self._client_ = session.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=access,
                aws_secret_access_key=secret,
            )
        return self._client_

    def _delete_prefix(self, prefix: str) -> None:
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    def task_dir(self, task: int) -> str:
        self._delete_prefix(f"{self.staging}/task-{task:06d}/")
        return tempfile.mkdtemp(prefix="atdata-ray-")

    def publish(self, task: int, shards: list[str]) -> list[str]:
        client = self.client()
        out = []
        for shard in shards:
            key = f"{self.staging}/task-{task:06d}/{os.path.basename(shard)}"
            client.upload_file(shard + SIDECAR_SUFFIX, self.bucket, key + SIDECAR_SUFFIX)
            client.upload_file(shard, self.bucket, key)
            out.append(key)
        return out

    def finish_task(self, local_dir: str) -> None:
        shutil.rmtree(local_dir, ignore_errors=True)

    def move(self, staged: str, final: str) -> None:
        client = self.client()
        final_key = final[len(f"s3://{self.bucket}/") :]
        for suffix in (SIDECAR_SUFFIX, ""):
            src = {"Bucket": self.bucket, "Key": staged + suffix}
            client.copy_object(Bucket=self.bucket, Key=final_key + suffix, CopySource=src)
            client.delete_object(Bucket=self.bucket, Key=staged + suffix)

    def cleanup(self) -> None:
        self._delete_prefix(self.staging + "/")

    def existing(self, pattern: re.Pattern[str]) -> list[str]:
        client = self.client()
        prefix = f"{self.prefix}/" if self.prefix else ""
        out: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            out.extend(o["Key"] for o in page.get("Contents", []) if pattern.fullmatch(o["Key"][len(prefix) :]))
        return [f"s3://{self.bucket}/{k}" for k in sorted(out)]


class AtdataDatasink(Datasink[dict[str, Any]]):
    """A Ray Data datasink writing atdata shards (see ``write_atdata``).

    After a successful write, :attr:`urls` holds the final shard URLs and :attr:`entry` the index entry (when an
    index was given).
    """

    def __init__(
        self,
        path: str,
        sample_type: type,
        *,
        maxcount: int | None = 10_000,
        maxsize: int | None = None,
        index: Any = None,
        name: str | None = None,
        version: str | None = None,
        s3_options: dict[str, Any] | None = None,
    ) -> None:
        if maxcount is None and maxsize is None:
            raise ValueError("write_atdata needs maxcount= or maxsize= (samples or bytes per shard)")
        if (index is None) != (name is None):
            raise ValueError("write_atdata records an index entry with both index= and name= (give both or neither)")
        self.path = path
        self.sample_type = sample_type
        self.maxcount, self.maxsize = maxcount, maxsize
        self.name, self.version = name, version
        self._index = index
        token = uuid.uuid4().hex[:12]
        remote = path.startswith("s3://")
        self._store: _Local | _S3 = _S3(path, token, dict(s3_options or {})) if remote else _Local(path, token)
        if not remote and s3_options:
            raise TypeError(f"S3 options {sorted(s3_options)} need an s3:// path, got {path!r}")
        root, ext = os.path.splitext(os.path.basename(path))
        self._stem, self._ext = root, ext or ".tar"
        self._final = re.compile(re.escape(root) + r"-\d{6}" + re.escape(self._ext))
        self.urls: list[str] = []
        self.entry: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_index"] = None  # an index (an open database) stays on the driver, where the commit records it
        return state

    @property
    def min_rows_per_write(self) -> int | None:
        """``maxcount``: every write call gets enough rows for whole shards (the last one of a task may be
        partial)."""
        return self.maxcount

    def check_target(self) -> None:
        """Raise when shards with the final names already exist (they would mix with the new ones)."""
        found = self._store.existing(self._final)
        if found:
            raise AtdataError(
                f"write_atdata: {len(found)} shard(s) named like {self._stem}-NNNNNN{self._ext} already exist "
                f"(first: {found[0]}); remove them, or write to another path"
            )

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        task = int(ctx.task_idx)
        store = self._store
        local_dir = store.task_dir(task)
        pattern = os.path.join(local_dir, f"{self._stem}-%06d{self._ext}")
        writer = ShardWriter(
            pattern, maxcount=self.maxcount, maxsize=self.maxsize, key=lambda _s, i: f"{task:06d}-{i:09d}"
        )
        try:
            with writer:
                for block in blocks:
                    table = BlockAccessor.for_block(block).to_arrow()
                    columns = table_to_columns(table, tensors=from_ray_tensor)
                    for sample in columns_to_samples(columns, table.num_rows, self.sample_type):
                        writer.write(sample)
            staged = store.publish(task, writer.shards)
        finally:
            store.finish_task(local_dir)
        return {"task": task, "shards": staged, "rows": writer.count}

    def on_write_complete(self, write_result: Any) -> None:
        """Commit: rename the staged shards and sidecars to their final names (numbered in task order), remove the
        staging prefix, and record the index entry."""
        returns = sorted((r for r in write_result.write_returns if r), key=lambda r: r["task"])
        staged = [s for r in returns for s in r["shards"]]
        base = self.path if self.path.startswith("s3://") else os.path.abspath(self.path)
        finals = [shard_name(base, i) for i in range(len(staged))]
        try:
            for src, dst in zip(staged, finals, strict=True):
                self._store.move(src, dst)
        finally:
            self._store.cleanup()
        self.urls = finals
        if self._index is not None and self.name is not None and finals:
            self.entry = self._index.insert_dataset(
                finals, name=self.name, version=self.version, sample_type=self.sample_type
            )

    def on_write_failed(self, error: Exception) -> None:
        """Remove every staged file (nothing was written under a final name)."""
        with contextlib.suppress(Exception):
            self._store.cleanup()

    def get_name(self) -> str:
        return "Atdata"
