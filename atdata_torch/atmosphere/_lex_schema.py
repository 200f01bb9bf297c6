"""``science.alt.dataset.schema`` records: built from ``@packable`` classes, compared, and turned back into classes.

Example:
    >>> import numpy as np, atdata_torch as atd
    >>> @atd.packable
    ... class Digit:
    ...     label: int
    >>> rec = schema_record(Digit, version="1.0.0")
    >>> rec["schema"]["properties"], schema_type(rec).__name__
    ({'label': {'type': 'integer'}}, 'Digit')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import SchemaError
from ..records import EXT, FieldHint, build_schema_record, record_signature, type_from_record
from ..records import class_signature as _class_signature
from ._lex_base import COLLECTIONS, NDARRAY_REF, NS, now_iso

__all__ = ["EXT_KEY", "SchemaRecord", "class_signature", "schema_record", "schema_type", "signature"]

#: The key of atdata_torch's extensions inside records (the original ignores it).
EXT_KEY = EXT
JSON_SCHEMA_DRAFT7 = "http://json-schema.org/draft-07/schema#"


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
