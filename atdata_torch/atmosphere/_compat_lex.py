"""The original atdata's ``Lex*`` record types: a typed view of ``science.alt.dataset.*`` records.

Each has ``to_record()`` (the record dict, ``$type`` included) and ``from_record(d)``. Nested objects the original
types further (``schema``, ``storage``, dataset ``metadata``, ``size``) are kept as the records' plain dicts here.

Example:
    >>> rec = LexLabelRecord(name="mnist", dataset_uri="at://did:plc:x/science.alt.dataset.entry/3k", version="1.0.0")
    >>> d = rec.to_record()
    >>> d["$type"], LexLabelRecord.from_record(d).version
    ('science.alt.dataset.label', '1.0.0')
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import PublishError
from ._lex_base import COLLECTIONS, NS

__all__ = [
    "LEXICON_NAMESPACE",
    "LexCodeReference",
    "LexDatasetEntry",
    "LexLabelRecord",
    "LexLensRecord",
    "LexSchemaRecord",
]

#: The records' namespace (``science.alt.dataset``).
LEXICON_NAMESPACE = NS


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _when(value: Any) -> _dt.datetime:
    if not value:
        return _now()
    return _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _need(d: Mapping[str, Any], key: str, kind: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise PublishError(
            f"malformed {kind} record: the field {key!r} is missing (found fields {sorted(d)}); "
            f"a {COLLECTIONS.get(kind, kind)} record needs it"
        ) from None


def _put(d: dict[str, Any], **optional: Any) -> dict[str, Any]:
    d.update({k: v for k, v in optional.items() if v is not None})
    return d


@dataclass
class LexCodeReference:
    """``lens#codeReference``: a repository, a commit and ``module:qualname``."""

    repository: str
    commit: str
    path: str
    branch: str | None = None
    language: str | None = None

    def to_record(self) -> dict[str, str]:
        """The record dict."""
        return _put(
            {"repository": self.repository, "commit": self.commit, "path": self.path},
            branch=self.branch,
            language=self.language,
        )

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> LexCodeReference:
        """Read a code reference."""
        return cls(
            repository=_need(d, "repository", "lens"),
            commit=_need(d, "commit", "lens"),
            path=_need(d, "path", "lens"),
            branch=d.get("branch"),
            language=d.get("language"),
        )


@dataclass
class LexSchemaRecord:
    """``science.alt.dataset.schema``; ``schema`` is the record's JSON-schema object as a dict."""

    name: str
    version: str
    schema_type: str
    schema: dict[str, Any]
    created_at: _dt.datetime = field(default_factory=_now)
    description: str | None = None
    metadata: dict[str, Any] | None = None
    atdata_schema_version: int = 1

    def to_record(self) -> dict[str, Any]:
        """The record dict."""
        d = {
            "$type": COLLECTIONS["schema"],
            "name": self.name,
            "version": self.version,
            "schemaType": self.schema_type,
            "schema": self.schema,
            "createdAt": self.created_at.isoformat(),
            "atdataSchemaVersion": self.atdata_schema_version,
        }
        return _put(d, description=self.description, metadata=self.metadata)

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> LexSchemaRecord:
        """Read a schema record."""
        return cls(
            name=_need(d, "name", "schema"),
            version=_need(d, "version", "schema"),
            schema_type=str(d.get("schemaType", "jsonSchema")),
            schema=dict(_need(d, "schema", "schema")),
            created_at=_when(d.get("createdAt")),
            description=d.get("description"),
            metadata=d.get("metadata"),
            atdata_schema_version=int(d.get("atdataSchemaVersion", 1)),
        )


@dataclass
class LexDatasetEntry:
    """``science.alt.dataset.entry``; ``storage``, ``metadata`` and ``size`` are the record's dicts."""

    name: str
    schema_ref: str
    storage: dict[str, Any]
    created_at: _dt.datetime = field(default_factory=_now)
    description: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    size: dict[str, Any] | None = None
    license: str | None = None
    metadata_schema_ref: str | None = None
    content_metadata: dict[str, Any] | None = None
    manifests: list[dict[str, Any]] | None = None

    def to_record(self) -> dict[str, Any]:
        """The record dict."""
        d = {
            "$type": COLLECTIONS["entry"],
            "name": self.name,
            "schemaRef": self.schema_ref,
            "storage": self.storage,
            "createdAt": self.created_at.isoformat(),
        }
        return _put(
            d,
            description=self.description,
            metadata=self.metadata,
            tags=self.tags,
            size=self.size,
            license=self.license,
            metadataSchemaRef=self.metadata_schema_ref,
            contentMetadata=self.content_metadata,
            manifests=self.manifests,
        )

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> LexDatasetEntry:
        """Read a dataset entry record."""
        meta = d.get("metadata")
        return cls(
            name=_need(d, "name", "entry"),
            schema_ref=_need(d, "schemaRef", "entry"),
            storage=dict(_need(d, "storage", "entry")),
            created_at=_when(d.get("createdAt")),
            description=d.get("description"),
            metadata=dict(meta) if isinstance(meta, Mapping) else None,
            tags=list(d["tags"]) if d.get("tags") is not None else None,
            size=d.get("size"),
            license=d.get("license"),
            metadata_schema_ref=d.get("metadataSchemaRef"),
            content_metadata=d.get("contentMetadata"),
            manifests=d.get("manifests"),
        )


@dataclass
class LexLensRecord:
    """``science.alt.dataset.lens``: two schema at-uris and two code references (never code)."""

    name: str
    source_schema: str
    target_schema: str
    getter_code: LexCodeReference
    putter_code: LexCodeReference
    created_at: _dt.datetime = field(default_factory=_now)
    description: str | None = None
    language: str | None = None
    metadata: dict[str, Any] | None = None
    source_schema_version: str | None = None
    target_schema_version: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The record dict."""
        d = {
            "$type": COLLECTIONS["lens"],
            "name": self.name,
            "sourceSchema": self.source_schema,
            "targetSchema": self.target_schema,
            "getterCode": self.getter_code.to_record(),
            "putterCode": self.putter_code.to_record(),
            "createdAt": self.created_at.isoformat(),
        }
        return _put(
            d,
            description=self.description,
            language=self.language,
            metadata=self.metadata,
            sourceSchemaVersion=self.source_schema_version,
            targetSchemaVersion=self.target_schema_version,
        )

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> LexLensRecord:
        """Read a lens record."""
        getter = LexCodeReference.from_record(_need(d, "getterCode", "lens"))
        return cls(
            name=_need(d, "name", "lens"),
            source_schema=_need(d, "sourceSchema", "lens"),
            target_schema=_need(d, "targetSchema", "lens"),
            getter_code=getter,
            putter_code=LexCodeReference.from_record(d["putterCode"]) if d.get("putterCode") else getter,
            created_at=_when(d.get("createdAt")),
            description=d.get("description"),
            language=d.get("language"),
            metadata=d.get("metadata"),
            source_schema_version=d.get("sourceSchemaVersion"),
            target_schema_version=d.get("targetSchemaVersion"),
        )


@dataclass
class LexLabelRecord:
    """``science.alt.dataset.label``: ``name`` (``@version``) -> a dataset entry's at-uri."""

    name: str
    dataset_uri: str
    created_at: _dt.datetime = field(default_factory=_now)
    version: str | None = None
    description: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The record dict."""
        d = {
            "$type": COLLECTIONS["label"],
            "name": self.name,
            "datasetUri": self.dataset_uri,
            "createdAt": self.created_at.isoformat(),
        }
        return _put(d, version=self.version, description=self.description)

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> LexLabelRecord:
        """Read a label record."""
        return cls(
            name=_need(d, "name", "label"),
            dataset_uri=_need(d, "datasetUri", "label"),
            created_at=_when(d.get("createdAt")),
            version=d.get("version") or None,
            description=d.get("description"),
        )
