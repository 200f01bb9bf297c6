"""The ``science.alt.dataset.*`` records (and the older ``ac.foundation.dataset.*`` ones), built and parsed.

Pure functions of dicts: nothing here talks to the network, so the shapes can be checked against
``docs/format.md`` without a PDS. Records never hold floats (a PDS refuses them).

Example:
    >>> import numpy as np, atdata_torch as atd
    >>> @atd.packable
    ... class Digit:
    ...     image: atd.NDArray[np.uint8]
    ...     label: int
    >>> rec = schema_record(Digit, version="1.0.0")
    >>> rec["$type"], sorted(rec["schema"]["properties"]), rec["schema"]["required"]
    ('science.alt.dataset.schema', ['image', 'label'], ['image', 'label'])
    >>> rec["schema"]["properties"]["image"]["dtype"], rec["schema"]["properties"]["label"]
    ('uint8', {'type': 'integer'})
    >>> schema_type(rec).__name__
    'Digit'
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import PublishError, SchemaError
from ..records import EXT, FieldHint, build_schema_record, record_signature, type_from_record
from ..records import class_signature as _class_signature

__all__ = [
    "COLLECTIONS",
    "LEGACY_COLLECTIONS",
    "NDARRAY_REF",
    "NS",
    "AtUri",
    "CodeRef",
    "DatasetRecord",
    "LabelRecord",
    "LensRecord",
    "SchemaRecord",
    "check_no_floats",
    "class_signature",
    "entry_record",
    "kind_of",
    "label_record",
    "lens_record",
    "now_iso",
    "parse_entry",
    "parse_label",
    "parse_lens",
    "schema_record",
    "schema_type",
    "signature",
]

NS = "science.alt.dataset"
LEGACY_NS = "ac.foundation.dataset"
COLLECTIONS = {"schema": f"{NS}.schema", "entry": f"{NS}.entry", "label": f"{NS}.label", "lens": f"{NS}.lens"}
#: The older namespace; its dataset entries were called ``record``.
LEGACY_COLLECTIONS = {
    "schema": f"{LEGACY_NS}.schema",
    "entry": f"{LEGACY_NS}.record",
    "label": f"{LEGACY_NS}.label",
    "lens": f"{LEGACY_NS}.lens",
}
NDARRAY_REF = "https://alt.science/schemas/atdata-ndarray-bytes/1.0.0#/$defs/ndarray"
#: The key of atdata_torch's extensions inside records (the original ignores it).
EXT_KEY = EXT
JSON_SCHEMA_DRAFT7 = "http://json-schema.org/draft-07/schema#"
NO_CHECKSUM = {"algorithm": "none", "digest": ""}


def now_iso() -> str:
    """The current UTC time as an RFC 3339 string, as records carry it.

    Example:
        >>> now_iso().endswith("Z")
        True
    """
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def kind_of(collection: str) -> str | None:
    """``"schema"``, ``"entry"``, ``"label"`` or ``"lens"`` for a collection NSID of either namespace.

    Example:
        >>> kind_of("ac.foundation.dataset.record"), kind_of("app.bsky.feed.post")
        ('entry', None)
    """
    for table in (COLLECTIONS, LEGACY_COLLECTIONS):
        for kind, nsid in table.items():
            if nsid == collection:
                return kind
    return None


# ------------------------------------------------------------------------------------------------------ at-uris
_AT_URI = re.compile(r"^at://(?P<repo>[^/?#]+)(?:/(?P<collection>[^/?#]+)(?:/(?P<rkey>[^/?#]+))?)?/?$")


@dataclass(frozen=True)
class AtUri:
    """``at://<repo>/<collection>/<rkey>``; ``repo`` is a DID or a handle.

    Example:
        >>> u = AtUri.parse("at://did:plc:abc/science.alt.dataset.entry/3kx")
        >>> u.repo, u.collection, u.rkey, str(u)
        ('did:plc:abc', 'science.alt.dataset.entry', '3kx', 'at://did:plc:abc/science.alt.dataset.entry/3kx')
    """

    repo: str
    collection: str | None = None
    rkey: str | None = None

    @classmethod
    def parse(cls, uri: str) -> AtUri:
        """Parse an at-uri.

        Raises:
            ValueError: ``uri`` is not ``at://repo[/collection[/rkey]]``.
        """
        m = _AT_URI.match(uri.strip())
        if not m:
            raise ValueError(f"not an at:// URI: {uri!r} (expected at://<did or handle>/<collection>/<rkey>)")
        return cls(m["repo"], m["collection"], m["rkey"])

    def __str__(self) -> str:
        return "/".join(p for p in (f"at://{self.repo}", self.collection, self.rkey) if p)


# ------------------------------------------------------------------------------------------------------ checks
def check_no_floats(value: Any, where: str = "record") -> None:
    """Refuse floats anywhere in a record (a PDS rejects them), naming the path and the fix.

    Raises:
        PublishError: a float was found.

    Example:
        >>> check_no_floats({"a": [1, "2.5"]})
        >>> check_no_floats({"metadata": {"lr": 0.1}})
        Traceback (most recent call last):
        ...
        atdata_torch.errors.PublishError: record.metadata.lr is the float 0.1; ...
    """
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float):
        raise PublishError(
            f"{where} is the float {value!r}; AT Protocol records cannot hold floats: store it as a string "
            f'("{value!r}") or an integer (e.g. scaled)'
        )
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_no_floats(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_no_floats(v, f"{where}[{i}]")


# ------------------------------------------------------------------------------------------------------ schemas
def _prop(ft: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(ft.get("$type", "")).split("#")[-1]
    if kind == "primitive":
        prim = ft.get("primitive")
        if prim == "bytes":
            return {"type": "string", "format": "byte", "contentEncoding": "base64"}
        return {"type": {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}[str(prim)]}
    if kind == "ndarray":
        # The original reads only $ref; dtype/shape (and the exact numpy dtype) are extensions it ignores.
        out: dict[str, Any] = {"$ref": NDARRAY_REF, "dtype": ft.get("dtype", "float32")}
        if ft.get("shape") is not None:
            out["shape"] = list(ft["shape"])
        if EXT in ft:
            out[EXT] = dict(ft[EXT])
        return out
    if kind == "array":
        arr: dict[str, Any] = {"type": "array"}
        items = ft.get("items")
        if isinstance(items, Mapping):
            arr["items"] = _prop(items)
            if (items.get(EXT) or {}).get("optional"):
                arr["items"][EXT] = {**arr["items"].get(EXT, {}), "optional": True}
        return arr
    if kind == "dict":
        return {"type": "object"}
    return {}  # Any


def schema_record(
    cls: type,
    *,
    version: str,
    description: str | None = None,
    hints: Mapping[str, FieldHint] | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """The ``science.alt.dataset.schema`` record of a ``@packable`` class (JSON Schema draft 7 shaped).

    Optional fields are left out of ``required``; NDArray properties are the ndarray-bytes ``$ref`` plus the
    ``dtype`` / ``shape`` extensions.

    Raises:
        SchemaError: ``cls`` is not ``@packable``.
    """
    local = build_schema_record(cls, version=version, description=description, hints=hints)
    props = {f["name"]: _prop(f["fieldType"]) for f in local["fields"]}
    required = [f["name"] for f in local["fields"] if not f["optional"]]
    body: dict[str, Any] = {
        "$type": f"{NS}.schema#jsonSchemaFormat",
        "$schema": JSON_SCHEMA_DRAFT7,
        "type": "object",
        "properties": props,
    }
    if required:
        body["required"] = required
    if any("$ref" in p for p in props.values()):
        body["arrayFormatVersions"] = {"ndarrayBytes": "1.0.0"}
    rec: dict[str, Any] = {
        "$type": COLLECTIONS["schema"],
        "name": local["name"],
        "version": version,
        "schemaType": "jsonSchema",
        "schema": body,
        "createdAt": now_iso(),
        "atdataSchemaVersion": 1,
    }
    if local.get("description"):
        rec["description"] = local["description"]
    meta = {k: v for k, v in (("license", license), ("tags", list(tags) if tags else None)) if v}
    if meta:
        rec["metadata"] = meta
    return rec


def signature(record: Mapping[str, Any]) -> str:
    """What must match for two schema records to describe the same type (name, fields, kinds, dtypes); the order
    of the properties does not count (a PDS returns them sorted)."""
    return _order_free(record_signature(record))


def class_signature(cls: type) -> str:
    """:func:`signature` of the schema a ``@packable`` class would publish."""
    return _order_free(_class_signature(cls))


def _order_free(sig: str) -> str:
    name, fields = json.loads(sig)
    return json.dumps([name, sorted(fields, key=lambda f: str(f.get("name")))], sort_keys=True)


def schema_type(record: Mapping[str, Any]) -> type:
    """The ``@packable`` class a schema record describes (rebuilt from data; no stored code runs).

    Raises:
        SchemaError: the record cannot be turned into a class.
    """
    if record.get("schemaType", "jsonSchema") != "jsonSchema":
        raise SchemaError(
            f"schema {record.get('name')!r} has schemaType {record.get('schemaType')!r}; only 'jsonSchema' is "
            "understood: pass sample_type= explicitly"
        )
    return type_from_record(record)


@dataclass(frozen=True)
class SchemaRecord:
    """A published schema: its at-uri, name, version and the raw record."""

    uri: str
    name: str
    version: str
    record: dict[str, Any] = field(repr=False)

    @property
    def sample_type(self) -> type:
        """The rebuilt ``@packable`` class."""
        return schema_type(self.record)


# ------------------------------------------------------------------------------------------------------ entries
def entry_record(
    *,
    name: str,
    schema_uri: str,
    storage: dict[str, Any],
    description: str | None = None,
    tags: list[str] | None = None,
    license: str | None = None,
    size: Mapping[str, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``science.alt.dataset.entry`` record.

    Raises:
        PublishError: a float in ``metadata``.
    """
    rec: dict[str, Any] = {
        "$type": COLLECTIONS["entry"],
        "name": name,
        "schemaRef": schema_uri,
        "storage": storage,
        "createdAt": now_iso(),
        "tags": list(tags or []),
    }
    if description:
        rec["description"] = description
    if license:
        rec["license"] = license
    if size:
        rec["size"] = {k: int(v) for k, v in size.items() if v is not None}
    if metadata:
        rec["metadata"] = dict(metadata)
    check_no_floats(rec)
    return rec


@dataclass(frozen=True)
class Shard:
    """One shard of a dataset record: where to read it, its sha256 (when recorded), its file name, its index blob."""

    url: str
    sha256: str | None = None
    name: str | None = None
    index_url: str | None = None
    samples: int | None = None


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset entry read back from a repo (either namespace, any storage kind).

    ``storage`` is ``"blobs"``, ``"http"``, ``"s3"`` or ``"external"`` (the legacy URL list); ``shards`` say where to
    read each shard (blob download URLs for blobs, ``s3://bucket/key`` for S3).
    """

    uri: str
    name: str
    schema_ref: str
    storage: str
    shards: tuple[Shard, ...]
    created_at: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    license: str | None = None
    size: dict[str, int] = field(default_factory=dict)
    s3: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def repo(self) -> str:
        """The DID (or handle) of the repo that holds the record."""
        return AtUri.parse(self.uri).repo

    @property
    def urls(self) -> list[str]:
        """The shard URLs, in order."""
        return [s.url for s in self.shards]


def blob_url(pds: str, did: str, cid: str) -> str:
    """The ``com.atproto.sync.getBlob`` URL of a blob.

    Example:
        >>> blob_url("http://localhost:2583/", "did:plc:x", "bafkrei")
        'http://localhost:2583/xrpc/com.atproto.sync.getBlob?did=did:plc:x&cid=bafkrei'
    """
    return f"{pds.rstrip('/')}/xrpc/com.atproto.sync.getBlob?did={did}&cid={cid}"


def _cid_of(ref: Any) -> str:
    if isinstance(ref, Mapping):
        inner = ref.get("ref")
        if isinstance(inner, Mapping) and "$link" in inner:
            return str(inner["$link"])
        if isinstance(inner, str):
            return inner
        if "cid" in ref:  # legacy blob ref {"cid", "mimeType"}
            return str(ref["cid"])
    raise PublishError(f"not a blob reference: {ref!r}")


def _digest(checksum: Any) -> str | None:
    if isinstance(checksum, Mapping) and str(checksum.get("algorithm", "")).lower() == "sha256":
        d = checksum.get("digest")
        return str(d).lower() if d else None
    return None


def parse_entry(uri: str, value: Mapping[str, Any], *, pds: str | None = None) -> DatasetRecord:
    """Read a dataset entry record (``science.alt.dataset.entry`` or ``ac.foundation.dataset.record``).

    Args:
        uri: The record's at-uri (its repo DID is the blob owner).
        value: The record.
        pds: The PDS endpoint of the repo (needed to turn blobs into download URLs).

    Raises:
        PublishError: the storage kind is unknown, or blob storage without a PDS endpoint.
    """
    storage = value.get("storage") or {}
    stype = str(storage.get("$type", ""))
    shards: list[Shard] = []
    s3: dict[str, str] = {}
    if stype.endswith(".storageBlobs") or "blobs" in storage:
        if pds is None:
            raise PublishError(f"{uri}: blob storage needs the repo's PDS endpoint", shard=uri)
        did = AtUri.parse(uri).repo
        for b in storage.get("blobs") or []:
            ext = b.get(EXT_KEY) or {}
            index = ext.get("index")
            shards.append(
                Shard(
                    url=blob_url(pds, did, _cid_of(b.get("blob"))),
                    sha256=_digest(b.get("checksum")),
                    name=ext.get("name"),
                    index_url=blob_url(pds, did, _cid_of(index)) if index else None,
                    samples=ext.get("samples"),
                )
            )
        kind = "blobs"
    elif stype.endswith(".storageS3") or "bucket" in storage:
        bucket = str(storage.get("bucket", ""))
        s3 = {k: str(storage[k]) for k in ("bucket", "region", "endpoint") if storage.get(k)}
        shards = [
            Shard(url=f"s3://{bucket}/{s['key']}", sha256=_digest(s.get("checksum")))
            for s in storage.get("shards") or []
        ]
        kind = "s3"
    elif stype.endswith(".storageHttp") or "shards" in storage:
        shards = [Shard(url=str(s["url"]), sha256=_digest(s.get("checksum"))) for s in storage.get("shards") or []]
        kind = "http"
    elif stype.endswith(".storageExternal") or "urls" in storage:
        shards = [Shard(url=str(u)) for u in storage.get("urls") or []]
        kind = "external"
    else:
        raise PublishError(
            f"{uri}: unknown storage kind {stype!r}; this version reads storageBlobs, storageHttp, storageS3 and "
            "storageExternal",
            shard=uri,
        )
    size = value.get("size") or {}
    return DatasetRecord(
        uri=uri,
        name=str(value.get("name", "")),
        schema_ref=str(value.get("schemaRef", "")),
        storage=kind,
        shards=tuple(shards),
        created_at=value.get("createdAt"),
        description=value.get("description"),
        tags=tuple(value.get("tags") or ()),
        license=value.get("license"),
        size={k: int(v) for k, v in size.items() if isinstance(v, int)},
        s3=s3,
        record=dict(value),
    )


# ------------------------------------------------------------------------------------------------------ labels
def label_record(
    *, name: str, dataset_uri: str, version: str | None = None, description: str | None = None
) -> dict[str, Any]:
    """A ``science.alt.dataset.label`` record: ``name`` (``@version``) points at a dataset entry."""
    rec: dict[str, Any] = {
        "$type": COLLECTIONS["label"],
        "name": name,
        "datasetUri": dataset_uri,
        "createdAt": now_iso(),
    }
    if version:
        rec["version"] = version
    if description:
        rec["description"] = description
    return rec


@dataclass(frozen=True)
class LabelRecord:
    """A label read back: ``name@version`` -> ``dataset_uri``."""

    uri: str
    name: str
    dataset_uri: str
    version: str | None = None
    created_at: str | None = None
    description: str | None = None


def parse_label(uri: str, value: Mapping[str, Any]) -> LabelRecord:
    """Read a label record (either namespace)."""
    return LabelRecord(
        uri=uri,
        name=str(value.get("name", "")),
        dataset_uri=str(value.get("datasetUri", "")),
        version=value.get("version") or None,
        created_at=value.get("createdAt"),
        description=value.get("description"),
    )


# ------------------------------------------------------------------------------------------------------ lenses
@dataclass(frozen=True)
class CodeRef:
    """Where a lens's code lives: a repository, an exact commit, and ``module:qualname`` inside it.

    Example:
        >>> CodeRef(repository="https://github.com/me/pkg", commit="a" * 40, path="pkg.lenses:gray").module
        'pkg.lenses'
    """

    repository: str
    commit: str
    path: str
    branch: str | None = None
    language: str = "python"

    def __post_init__(self) -> None:
        if ":" not in self.path:
            raise ValueError(f"CodeRef.path must be 'module:qualname' (e.g. 'pkg.lenses:gray'), got {self.path!r}")

    @property
    def module(self) -> str:
        """The module part of ``path``."""
        return self.path.split(":", 1)[0]

    @property
    def qualname(self) -> str:
        """The object part of ``path``."""
        return self.path.split(":", 1)[1]

    def to_record(self) -> dict[str, str]:
        """The record's ``codeReference`` object."""
        out = {"repository": self.repository, "commit": self.commit, "path": self.path}
        if self.branch:
            out["branch"] = self.branch
        if self.language:
            out["language"] = self.language
        return out

    @classmethod
    def from_record(cls, value: Mapping[str, Any]) -> CodeRef:
        """Read a ``codeReference`` object."""
        try:
            return cls(
                repository=str(value["repository"]),
                commit=str(value["commit"]),
                path=str(value["path"]),
                branch=value.get("branch"),
                language=str(value.get("language") or "python"),
            )
        except (KeyError, TypeError) as exc:
            raise PublishError(f"malformed code reference {dict(value)!r}: missing {exc}") from exc


def lens_record(
    *,
    name: str,
    source_schema: str,
    target_schema: str,
    getter: CodeRef,
    putter: CodeRef,
    description: str | None = None,
) -> dict[str, Any]:
    """A ``science.alt.dataset.lens`` record (code references only: a record never carries code)."""
    rec: dict[str, Any] = {
        "$type": COLLECTIONS["lens"],
        "name": name,
        "sourceSchema": source_schema,
        "targetSchema": target_schema,
        "getterCode": getter.to_record(),
        "putterCode": putter.to_record(),
        "createdAt": now_iso(),
        "language": getter.language,
    }
    if description:
        rec["description"] = description
    return rec


@dataclass(frozen=True)
class LensRecord:
    """A lens record read back: data, never code. :meth:`Atmosphere.load_lens` turns it into a
    :class:`~atdata_torch.Lens` only for code you installed and allowed."""

    uri: str
    name: str
    source_schema: str
    target_schema: str
    getter: CodeRef
    putter: CodeRef
    description: str | None = None
    created_at: str | None = None


def parse_lens(uri: str, value: Mapping[str, Any]) -> LensRecord:
    """Read a lens record (either namespace)."""
    return LensRecord(
        uri=uri,
        name=str(value.get("name", "")),
        source_schema=str(value.get("sourceSchema", "")),
        target_schema=str(value.get("targetSchema", "")),
        getter=CodeRef.from_record(value.get("getterCode") or {}),
        putter=CodeRef.from_record(value.get("putterCode") or value.get("getterCode") or {}),
        description=value.get("description"),
        created_at=value.get("createdAt"),
    )
