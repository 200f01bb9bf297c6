"""Schema records on a repo: publish (reusing an identical one, else the next patch version), list, read back."""

from __future__ import annotations

import logging

from ..errors import SchemaError
from ..records import latest_semver, parse_semver
from ._kinds import list_kind
from ._lexicon import COLLECTIONS, SchemaRecord, schema_record, signature
from ._xrpc import XrpcRepo

__all__ = ["get_schema", "list_schemas", "publish_schema", "schema_type"]

log = logging.getLogger("atdata_torch")


def _bump(v: str) -> str:
    sv = parse_semver(v)
    return f"{sv[0]}.{sv[1]}.{sv[2] + 1}" if sv else v + ".1"


def list_schemas(xrpc: XrpcRepo, repo: str | None = None) -> list[SchemaRecord]:
    """See :meth:`Atmosphere.list_schemas`."""
    return [
        SchemaRecord(uri=u, name=str(v.get("name", "")), version=str(v.get("version", "")), record=v)
        for u, v in list_kind(xrpc, "schema", repo)
    ]


def publish_schema(
    xrpc: XrpcRepo,
    sample_type: type,
    *,
    version: str | None = None,
    description: str | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
) -> str:
    """See :meth:`Atmosphere.publish_schema`."""
    xrpc.account()
    draft = schema_record(sample_type, version=version or "1.0.0", description=description)
    sig = signature(draft)
    same_name = [s for s in list_schemas(xrpc) if s.name == draft["name"]]
    for s in same_name:
        if (version is None or s.version == version) and signature(s.record) == sig:
            log.info("atdata_torch: reusing schema %s@%s (%s)", s.name, s.version, s.uri)
            return s.uri
    if version is not None and any(s.version == version for s in same_name):
        taken = next(s for s in same_name if s.version == version)
        raise SchemaError(
            f"schema {draft['name']}@{version} is already published ({taken.uri}) with different fields; "
            f"publish the new fields as another version (e.g. version={_bump(version)!r})"
        )
    if version is None and same_name:
        latest = latest_semver(s.version for s in same_name)
        version = _bump(latest) if latest else "1.0.0"
    rec = schema_record(sample_type, version=version or "1.0.0", description=description, license=license, tags=tags)
    return xrpc.create_record(COLLECTIONS["schema"], rec)


def get_schema(xrpc: XrpcRepo, uri: str) -> SchemaRecord:
    """See :meth:`Atmosphere.get_schema`."""
    u, v = xrpc.get_record(uri)
    return SchemaRecord(uri=u, name=str(v.get("name", "")), version=str(v.get("version", "")), record=v)


def schema_type(xrpc: XrpcRepo, uri: str) -> type:
    """See :meth:`Atmosphere.schema_type`."""
    return get_schema(xrpc, uri).sample_type
