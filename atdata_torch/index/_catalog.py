"""The schema and lens half of :class:`~atdata_torch.index.Index` (a base class it derives from).

Schemas are stored in the original atdata's local JSON and rebuilt as ``@packable`` classes without running stored
code; lenses are stored as code references or field mappings (both record kinds: :mod:`atdata_torch.records`).

Example:
    >>> import os, tempfile
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Point:
    ...     x: float
    ...     label: str | None = None
    >>> index = atd.Index(os.path.join(tempfile.mkdtemp(), "index.db"))
    >>> ref = index.publish_schema(Point)
    >>> ref, index.publish_schema(Point) == ref            # same fields: same version
    ('atdata://local/schema/Point@1.0.0', True)
    >>> index.get_schema_type(ref)(1.5)
    Point(x=1.5, label=None)
    >>> index.close()
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import IndexStoreError
from ..lens import Lens
from ..lens import registry as lens_registry
from ..records import (
    LENS_PREFIX,
    FieldHint,
    build_schema_record,
    class_signature,
    latest_semver,
    lens_from_record,
    lens_record,
    parse_lens_ref,
    parse_schema_ref,
    parse_semver,
    record_signature,
    schema_ref,
    type_from_record,
)
from ..schema import PackableSample
from ._records import IndexNotFoundError, IndexStore, similar

__all__ = ["Catalog"]


def _bump(version: str | None) -> str:
    parsed = parse_semver(version) if version else None
    return "1.0.0" if parsed is None else f"{parsed[0]}.{parsed[1]}.{parsed[2] + 1}"


def _semver_desc(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=lambda v: (parse_semver(v) is not None, parse_semver(v) or (0, 0, 0), v), reverse=True)


def _schema_name_of(x: type | str) -> str:
    if isinstance(x, type):
        return x.__name__
    if "@" in x:
        try:
            return parse_schema_ref(x)[0]
        except ValueError:
            pass
    return x


class Catalog:
    """Schemas and lenses of an index; :class:`~atdata_torch.index.Index` adds datasets and labels."""

    store: IndexStore

    @property
    def location(self) -> str:
        """The store's path or URL."""
        return self.store.location

    def _not_found(self, what: str, name: str, pool: Iterable[str]) -> IndexNotFoundError:
        near = similar(name, pool)
        hint = f"; similar names: {', '.join(near)}" if near else "; list them with index.list_datasets()"
        return IndexNotFoundError(f"no {what} named {name!r} in the index at {self.location}{hint}")

    # ================================================================================================ schemas
    def _schema_records(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for v in _semver_desc(self.store.schema_versions(name)):
            text = self.store.get_schema(name, v)
            if text is not None:
                out.append((v, json.loads(text)))
        return out

    def _ensure_schema(self, cls: type, hints: Mapping[str, FieldHint] | None) -> str:
        """The ref of a stored schema that describes ``cls`` (any version), publishing one when none does."""
        sig = class_signature(cls)
        while True:
            records = self._schema_records(cls.__name__)
            for v, rec in records:
                if record_signature(rec) == sig:
                    return schema_ref(cls.__name__, v)
            version = _bump(latest_semver(v for v, _ in records))
            rec = build_schema_record(cls, version=version, hints=hints)
            if self.store.put_schema(cls.__name__, version, json.dumps(rec), replace=False):
                return schema_ref(cls.__name__, version)

    def publish_schema(
        self,
        sample_type: type,
        *,
        version: str | None = None,
        description: str | None = None,
        shapes: Mapping[str, list[int | None]] | None = None,
    ) -> str:
        """Store the schema of a ``@packable`` class; returns ``atdata://local/schema/{Name}@{version}``.

        Args:
            sample_type: The class.
            version: The version; by default the latest version when it describes the same fields, else the next
                patch version (``1.0.0`` first). Concurrent publishers never take the same version.
            description: Text (default: the class docstring).
            shapes: Known NDArray shapes, ``{"image": [28, 28]}`` (``None`` for a varying dimension).

        Raises:
            SchemaError: not a ``@packable`` class.
            IndexStoreError: ``version`` exists with different fields.
        """
        name = sample_type.__name__
        hints = {k: FieldHint(shape=list(v)) for k, v in (shapes or {}).items()}
        sig = class_signature(sample_type)
        if version is not None:
            rec = build_schema_record(sample_type, version=version, description=description, hints=hints)
            old = self.store.get_schema(name, version)
            if old is not None and record_signature(json.loads(old)) != sig:
                raise IndexStoreError(
                    f"schema {name}@{version} already exists with different fields; publish another version "
                    f"(or omit version= to get the next one)"
                )
            self.store.put_schema(name, version, json.dumps(rec), replace=True)
            return schema_ref(name, version)
        while True:
            latest = latest_semver(self.store.schema_versions(name))
            if latest is not None:
                text = self.store.get_schema(name, latest)
                if text is not None and record_signature(json.loads(text)) == sig:
                    return schema_ref(name, latest)
            version = _bump(latest)
            rec = build_schema_record(sample_type, version=version, description=description, hints=hints)
            if self.store.put_schema(name, version, json.dumps(rec), replace=False):
                return schema_ref(name, version)

    def get_schema(self, ref: str) -> dict[str, Any]:
        """A schema record (``$ref`` added), by ``atdata://local/schema/N@v``, legacy ``local://schemas/...``,
        ``N@v`` or ``N`` (latest version).

        Raises:
            IndexNotFoundError: no such schema.
        """
        if "@" in ref:
            name, version = parse_schema_ref(ref)
        else:
            name, version = ref, latest_semver(self.store.schema_versions(ref)) or ""
        text = self.store.get_schema(name, version) if version else None
        if text is None:
            pool = {n for n, _, _ in self.store.iter_schemas()}
            versions = sorted(self.store.schema_versions(name))
            if versions:
                raise IndexNotFoundError(f"schema {name!r} has no version {version!r}; versions: {versions}")
            raise self._not_found("schema", name, pool)
        record: dict[str, Any] = json.loads(text)
        record["$ref"] = schema_ref(name, version)
        return record

    def get_schema_type(self, ref: str) -> type:
        """A ``@packable`` class rebuilt from a stored schema (no stored code runs); the same ref gives the same
        class.

        Example:
            >>> # T = index.get_schema_type("atdata://local/schema/ImageSample@1.0.0"); T(image=..., label=...)
        """
        record = self.get_schema(ref)
        return type_from_record(record, ref=record["$ref"])

    def list_schemas(self) -> list[dict[str, Any]]:
        """Every schema record (``$ref`` added)."""
        out = []
        for name, version, text in self.store.iter_schemas():
            rec = json.loads(text)
            rec["$ref"] = schema_ref(name, version)
            out.append(rec)
        return sorted(out, key=lambda r: (str(r.get("name")), str(r.get("version"))))

    # ================================================================================================ lenses
    def store_lens(
        self,
        lens: Lens[Any, Any],
        *,
        name: str | None = None,
        version: str | None = None,
        description: str | None = None,
    ) -> str:
        """Store a lens as a code reference (``module:qualname`` of its getter/putter) or, for a
        :class:`~atdata_torch.index.FieldMappingLens`, as a field mapping. Schemas of its ``@packable`` source
        and view types are published when missing. Returns ``atdata://local/lens/{name}@{version}``.

        Args:
            lens: The lens (``@atd.lens`` functions in an importable module, or a ``FieldMappingLens``).
            name: The lens name (default: ``lens.name``).
            version: The version (default: the latest when identical, else the next patch version).
            description: Text.

        Raises:
            IndexStoreError: the lens's getter cannot be imported by name (a lambda, a closure, ``__main__``).
        """
        lens_name: str = name or str(lens.name)
        src, view = lens.source_type, lens.view_type
        refs = [
            self._ensure_schema(t, None) if isinstance(t, type) and issubclass(t, PackableSample) else None
            for t in (src, view)
        ]

        def record(v: str) -> dict[str, Any]:
            return lens_record(
                lens,
                name=lens_name,
                version=v,
                description=description,
                source_schema=_schema_name_of(src) if isinstance(src, type) else str(src),
                view_schema=_schema_name_of(view) if isinstance(view, type) else str(view),
                source_ref=refs[0],
                view_ref=refs[1],
            )

        def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
            keys = ("source_schema", "view_schema", "getter", "putter", "atdataTorch")
            return all(a.get(k) == b.get(k) for k in keys)

        if version is not None:
            self.store.put_lens(lens_name, version, json.dumps(record(version)), replace=True)
            return f"{LENS_PREFIX}{lens_name}@{version}"
        while True:
            latest = latest_semver(self.store.lens_versions(lens_name))
            candidate = record(_bump(latest))
            if latest is not None:
                text = self.store.get_lens(lens_name, latest)
                if text is not None and same(json.loads(text), candidate):
                    return f"{LENS_PREFIX}{lens_name}@{latest}"
            if self.store.put_lens(lens_name, candidate["version"], json.dumps(candidate), replace=False):
                return f"{LENS_PREFIX}{lens_name}@{candidate['version']}"

    def get_lens(self, ref: str) -> dict[str, Any]:
        """A lens record (``$ref`` added) by ``atdata://local/lens/name@v``, ``name@v`` or ``name`` (latest).

        Raises:
            IndexNotFoundError: no such lens.
        """
        if "@" in ref or ref.startswith(LENS_PREFIX):
            name, version = parse_lens_ref(ref)
        else:
            name, version = ref, latest_semver(self.store.lens_versions(ref)) or ""
        text = self.store.get_lens(name, version) if version else None
        if text is None:
            raise self._not_found(
                "lens", f"{name}@{version}" if version else name, (f"{n}@{v}" for n, v, _ in self.store.iter_lenses())
            )
        record: dict[str, Any] = json.loads(text)
        record["$ref"] = f"{LENS_PREFIX}{name}@{version}"
        return record

    def load_lens(
        self,
        ref: str | Mapping[str, Any],
        *,
        source_type: type | None = None,
        view_type: type | None = None,
        register: bool = True,
    ) -> Lens[Any, Any]:
        """Rebuild a stored lens (and register it, so ``ds.as_type(View)`` finds it).

        Code references are imported by module name from what is installed; field mappings are rebuilt between
        the given types or, by default, the types rebuilt from the schemas recorded with the lens.

        Raises:
            LensNotFoundError: the lens's module is not installed, or its record cannot be rebuilt.
            IndexNotFoundError: no such lens.
        """
        record = self.get_lens(ref) if isinstance(ref, str) else dict(ref)

        def resolve(schema_name: str, exact: str | None) -> type:
            return self.get_schema_type(exact or schema_name)

        lens = lens_from_record(record, source_type=source_type, view_type=view_type, resolve_type=resolve)
        if register:
            lens_registry.register(lens)
        return lens

    def find_lenses(self, source: type | str | None = None, target: type | str | None = None) -> list[dict[str, Any]]:
        """Lens records from ``source`` and/or to ``target`` (a class, a schema name, or a schema reference).

        Example:
            >>> # index.find_lenses(source=ImageSample, target="GrayscaleSample")
        """
        want_src = _schema_name_of(source) if source is not None else None
        want_dst = _schema_name_of(target) if target is not None else None
        out = []
        for rec in self.list_lenses():
            if want_src is not None and rec.get("source_schema") != want_src:
                continue
            if want_dst is not None and rec.get("view_schema") != want_dst:
                continue
            out.append(rec)
        return out

    def list_lenses(self) -> list[dict[str, Any]]:
        """Every lens record (``$ref`` added)."""
        out = []
        for name, version, text in self.store.iter_lenses():
            try:
                rec = json.loads(text)
            except ValueError:
                continue
            rec["$ref"] = f"{LENS_PREFIX}{name}@{version}"
            out.append(rec)
        return sorted(out, key=lambda r: (str(r.get("name")), str(r.get("version"))))
