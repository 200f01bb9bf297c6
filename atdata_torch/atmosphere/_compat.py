"""The original atdata's publisher classes (``SchemaPublisher``, ``DatasetPublisher``, ``LensPublisher``,
``LabelPublisher``), as a thin facade over :class:`~atdata_torch.atmosphere.Atmosphere`.

They return :class:`AtUri` objects as the original does. Where this package is stricter (an identical schema is
reused instead of published again, local shard files are uploaded as blobs instead of recorded as file paths) the
facade inherits it; ``docs/migrating-from-atdata.md`` lists the deviations.

Example (needs a PDS; the tests run one on loopback)::

    from atdata_torch.atmosphere import Atmosphere, SchemaPublisher, DatasetPublisher, DatasetLoader
    atmo = Atmosphere.login("alice.test", "alice-pass", pds="http://localhost:2583")
    schema_uri = SchemaPublisher(atmo).publish(MySample, version="1.0.0")
    uri = DatasetPublisher(atmo).publish(ds, name="digits", schema_uri=str(schema_uri))
    ds2 = DatasetLoader(atmo).to_dataset(uri, MySample)
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ..errors import PublishError
from ._blobstore import blob_entry_record
from ._client import Atmosphere
from ._lex_base import COLLECTIONS, AtUri
from ._lex_lens import CodeRef, lens_record

__all__ = ["DatasetPublisher", "LabelPublisher", "LensPublisher", "SchemaPublisher"]


def _no_rkey(rkey: str | None, what: str) -> None:
    if rkey is not None:
        raise PublishError(
            f"{what}(rkey={rkey!r}): atdata_torch lets the PDS choose record keys (TIDs); drop rkey= "
            "(records are found by their at-uri, returned by publish)"
        )


class SchemaPublisher:
    """Publish ``@packable`` schemas (``science.alt.dataset.schema``).

    Args:
        client: A logged-in :class:`Atmosphere`.
    """

    def __init__(self, client: Atmosphere) -> None:
        self.client = client

    def publish(
        self,
        sample_type: type,
        *,
        name: str | None = None,
        version: str = "1.0.0",
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        rkey: str | None = None,
    ) -> AtUri:
        """Publish the schema of ``sample_type`` at ``version`` (an identical published one is reused).

        Args:
            sample_type: The ``@packable`` class.
            name: Must be the class name when given (the schema name is the class name here).
            version: The schema version.
            description: Defaults to the class docstring.
            metadata: ``license`` and ``tags`` are recorded; other keys are refused.
            rkey: Not supported (must be ``None``).

        Raises:
            SchemaError: not ``@packable``, or ``name@version`` is published with other fields.
            PublishError: ``name`` differs from the class name, ``rkey``, or unsupported ``metadata`` keys.
        """
        _no_rkey(rkey, "SchemaPublisher.publish")
        if name is not None and name != sample_type.__name__:
            raise PublishError(
                f"SchemaPublisher.publish(name={name!r}): the schema name is the class name here "
                f"({sample_type.__name__!r}); rename the class or drop name="
            )
        meta = dict(metadata or {})
        extra = sorted(set(meta) - {"license", "tags"})
        if extra:
            raise PublishError(
                f"SchemaPublisher.publish(metadata=...): keys {extra} are not recorded by atdata_torch; "
                "only 'license' and 'tags' are (put other text in description=)"
            )
        uri = self.client.publish_schema(
            sample_type, version=version, description=description, license=meta.get("license"), tags=meta.get("tags")
        )
        return AtUri.parse(uri)


class DatasetPublisher:
    """Publish dataset entries (``science.alt.dataset.entry``).

    Args:
        client: A logged-in :class:`Atmosphere`.
    """

    def __init__(self, client: Atmosphere) -> None:
        self.client = client

    def _publish(self, shards: Any, schema_uri: Any, **kw: Any) -> AtUri:
        """The one route of every ``publish*``: publish the entry, return its at-uri."""
        return AtUri.parse(self.client.publish_dataset(shards, schema_uri=str(schema_uri), **kw))

    def publish(
        self,
        dataset: Any,
        *,
        name: str,
        schema_uri: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        auto_publish_schema: bool = True,
        schema_version: str = "1.0.0",
        rkey: str | None = None,
        **_original: Any,
    ) -> AtUri:
        """Publish ``dataset`` (and its schema unless ``schema_uri``).

        Deviation: local shards are uploaded as PDS blobs (the original records their file paths as
        ``storageHttp``); http(s) shards are recorded by URL, ``s3://`` ones as ``storageS3``.

        Raises:
            PublishError: no ``schema_uri`` while ``auto_publish_schema`` is false, or ``rkey``; see
                :meth:`Atmosphere.publish_dataset` for the rest.
        """
        _no_rkey(rkey, "DatasetPublisher.publish")  # before the schema is published
        if schema_uri is None:
            if not auto_publish_schema:
                raise PublishError(
                    f"DatasetPublisher.publish({name!r}): schema_uri is required when auto_publish_schema=False"
                )
            schema_uri = self.client.publish_schema(dataset.sample_type, version=schema_version)
        return self._publish(dataset, schema_uri, name=name, description=description, tags=tags, license=license)

    def publish_with_urls(
        self,
        urls: list[str],
        schema_uri: str,
        *,
        name: str,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        metadata: dict[str, Any] | None = None,
        rkey: str | None = None,
        **_original: Any,
    ) -> AtUri:
        """Publish shards by URL (``https://`` as ``storageHttp``, ``s3://`` as ``storageS3``; local paths as blobs)."""
        _no_rkey(rkey, "DatasetPublisher.publish_with_urls")
        meta = {"description": description, "tags": tags, "license": license, "metadata": metadata}
        return self._publish([str(u) for u in urls], schema_uri, name=name, **meta)

    def publish_with_s3(
        self,
        bucket: str,
        keys: list[str],
        schema_uri: str,
        *,
        name: str,
        region: str | None = None,
        endpoint: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        metadata: dict[str, Any] | None = None,
        rkey: str | None = None,
        **_original: Any,
    ) -> AtUri:
        """Publish ``s3://bucket/key`` shards as ``storageS3`` (with the endpoint and region to read them from)."""
        _no_rkey(rkey, "DatasetPublisher.publish_with_s3")
        meta = {"description": description, "tags": tags, "license": license, "metadata": metadata}
        shards = [f"s3://{bucket}/{k}" for k in keys]
        return self._publish(
            shards,
            schema_uri,
            name=name,
            storage="s3",
            endpoint=endpoint,
            region=region,
            **meta,
        )

    def publish_with_blob_refs(
        self,
        blob_refs: list[dict[str, Any]],
        schema_uri: str,
        *,
        name: str,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        metadata: dict[str, Any] | None = None,
        metadata_schema_ref: str | None = None,
        content_metadata: dict[str, Any] | None = None,
        checksums: list[Any] | None = None,
        rkey: str | None = None,
    ) -> AtUri:
        """Publish an entry over blobs already uploaded (``PDSBlobStore.write_shards(ds).blob_refs``).

        ``checksums``: one per ref (``{"algorithm", "digest"}`` dicts or objects, or sha256 hex strings); without
        them the sha256 sums a ``ShardUploadResult`` carries are used, else the original's placeholder.

        Raises:
            PublishError: a length mismatch, ``rkey``, or the PDS refused the record.
        """
        _no_rkey(rkey, "DatasetPublisher.publish_with_blob_refs")
        return AtUri.parse(
            self.client.create_record(
                COLLECTIONS["entry"],
                blob_entry_record(
                    blob_refs,
                    schema_uri,
                    name=name,
                    description=description,
                    tags=tags,
                    license=license,
                    metadata=metadata,
                    metadata_schema_ref=metadata_schema_ref,
                    content_metadata=content_metadata,
                    checksums=checksums,
                ),
            )
        )

    def publish_with_blobs(
        self,
        blobs: list[bytes],
        schema_uri: str,
        *,
        name: str,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        metadata: dict[str, Any] | None = None,
        mime_type: str = "application/x-tar",
        rkey: str | None = None,
        **_original: Any,
    ) -> AtUri:
        """Upload tar shards given as bytes as PDS blobs and publish them (each must be a valid shard)."""
        _no_rkey(rkey, "DatasetPublisher.publish_with_blobs")
        if mime_type != "application/x-tar":
            raise PublishError(
                f"DatasetPublisher.publish_with_blobs(mime_type={mime_type!r}): shards are uploaded as "
                "application/x-tar; pass tar shards"
            )
        with tempfile.TemporaryDirectory(prefix="atdata-torch-blobs-") as tmp:
            paths = []
            for i, data in enumerate(blobs):
                path = os.path.join(tmp, f"data-{i:06d}.tar")
                with open(path, "wb") as f:
                    f.write(data)
                paths.append(path)
            meta = {"description": description, "tags": tags, "license": license, "metadata": metadata}
            return self._publish(paths, schema_uri, name=name, storage="blobs", **meta)


class LensPublisher:
    """Publish lens records (code references; a record never carries code).

    Args:
        client: A logged-in :class:`Atmosphere`.
    """

    def __init__(self, client: Atmosphere) -> None:
        self.client = client

    def publish(
        self,
        *,
        name: str,
        source_schema_uri: str,
        target_schema_uri: str,
        code_repository: str,
        code_commit: str,
        getter_path: str,
        putter_path: str,
        description: str | None = None,
        language: str | None = None,
        rkey: str | None = None,
        **_original: Any,
    ) -> AtUri:
        """Publish a lens from ``source_schema_uri`` to ``target_schema_uri``; paths are ``module:qualname``.

        Raises:
            ValueError: a path is not ``module:qualname``.
        """
        _no_rkey(rkey, "LensPublisher.publish")
        lang = language or "python"
        getter = CodeRef(repository=code_repository, commit=code_commit, path=getter_path, language=lang)
        putter = CodeRef(repository=code_repository, commit=code_commit, path=putter_path, language=lang)
        rec = lens_record(
            name=name,
            source_schema=str(source_schema_uri),
            target_schema=str(target_schema_uri),
            getter=getter,
            putter=putter,
            description=description,
        )
        return AtUri.parse(self.client.create_record(COLLECTIONS["lens"], rec))

    def publish_from_lens(
        self,
        lens_obj: Any,
        *,
        name: str,
        source_schema_uri: str,
        target_schema_uri: str,
        code_repository: str,
        code_commit: str,
        description: str | None = None,
        language: str | None = None,
        rkey: str | None = None,
        **_original: Any,
    ) -> AtUri:
        """Like :meth:`publish`, with the getter's and putter's ``module:qualname`` taken from ``lens_obj``."""
        getter = getattr(lens_obj, "_get", None) or lens_obj
        putter = getattr(lens_obj, "_put", None) or getter

        def path(fn: Any) -> str:
            return f"{fn.__module__}:{fn.__qualname__}"

        return self.publish(
            name=name,
            source_schema_uri=source_schema_uri,
            target_schema_uri=target_schema_uri,
            code_repository=code_repository,
            code_commit=code_commit,
            getter_path=path(getter),
            putter_path=path(putter),
            description=description,
            language=language,
            rkey=rkey,
        )


class LabelPublisher:
    """Publish labels: ``name`` (``@version``) -> a dataset entry.

    Args:
        client: A logged-in :class:`Atmosphere`.
    """

    def __init__(self, client: Atmosphere) -> None:
        self.client = client

    def publish(
        self,
        name: str,
        dataset_uri: str | AtUri,
        *,
        version: str | None = None,
        description: str | None = None,
        rkey: str | None = None,
    ) -> AtUri:
        """Point ``name@version`` at ``dataset_uri``.

        Raises:
            RecordNotFoundError: ``dataset_uri`` is not a dataset entry.
        """
        _no_rkey(rkey, "LabelPublisher.publish")
        uri = self.client.label(name, str(dataset_uri), version=version, description=description)
        return AtUri.parse(uri)
