"""Lens records: published as code references, and turned back into lenses only from installed, allowed code."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import AuthError, PublishError, SchemaError
from ..lens import Lens
from ._kinds import list_kind
from ._lexicon import COLLECTIONS, CodeRef, LensRecord, class_signature, lens_record, parse_lens, signature
from ._schemas import get_schema, publish_schema, schema_type
from ._xrpc import XrpcRepo

__all__ = ["find_lenses", "load_lens", "publish_lens"]


def publish_lens(
    xrpc: XrpcRepo,
    lens: Lens[Any, Any],
    *,
    code: CodeRef,
    putter_code: CodeRef | None = None,
    name: str | None = None,
    description: str | None = None,
) -> str:
    """See :meth:`Atmosphere.publish_lens`."""
    src = publish_schema(xrpc, lens.source_type)
    dst = publish_schema(xrpc, lens.view_type)
    rec = lens_record(
        name=name or str(lens.name),
        source_schema=src,
        target_schema=dst,
        getter=code,
        putter=putter_code or code,
        description=description,
    )
    return xrpc.create_record(COLLECTIONS["lens"], rec)


def find_lenses(
    xrpc: XrpcRepo, *, source: type | str | None = None, target: type | str | None = None, repo: str | None = None
) -> list[LensRecord]:
    """See :meth:`Atmosphere.find_lenses`."""

    def matches(ref: str, want: type | str | None) -> bool:
        if want is None:
            return True
        if isinstance(want, str) and want.startswith("at://"):
            return ref == want
        wanted = want if isinstance(want, str) else want.__name__
        try:
            return get_schema(xrpc, ref).name == wanted
        except PublishError:
            return False

    out = [parse_lens(u, v) for u, v in list_kind(xrpc, "lens", repo)]
    return [r for r in out if matches(r.source_schema, source) and matches(r.target_schema, target)]


def load_lens(
    xrpc: XrpcRepo, lens: LensRecord | str, *, allow: Iterable[str] = (), register: bool = False
) -> Lens[Any, Any]:
    """See :meth:`Atmosphere.load_lens`."""
    from ..records import import_code_ref

    rec = lens if isinstance(lens, LensRecord) else parse_lens(*xrpc.get_record(lens))
    allowed = set(allow)

    def permitted(ref: CodeRef) -> bool:
        parts = ref.module.split(".")
        prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
        return ref.path in allowed or bool(prefixes & allowed)

    for ref in {rec.getter, rec.putter}:
        if not permitted(ref):
            raise AuthError(
                f"lens {rec.name!r} ({rec.uri}) points at code {ref.path} from {ref.repository} @ "
                f"{ref.commit[:12]}; records are data, so that code runs only if you install it and allow it: "
                f"load_lens(..., allow=[{ref.module!r}])"
            )
    getter = import_code_ref(rec.getter.module, rec.getter.qualname, lens=rec.name)
    if isinstance(getter, Lens):
        out: Lens[Any, Any] = getter
    else:
        putter = None
        if rec.putter.path != rec.getter.path:
            putter = import_code_ref(rec.putter.module, rec.putter.qualname, lens=rec.name)
        src_t = schema_type(xrpc, rec.source_schema)
        dst_t = schema_type(xrpc, rec.target_schema)
        out = Lens(getter, putter, source=src_t, view=dst_t, name=rec.name)
    for what, schema_ref, have in (
        ("source", rec.source_schema, out.source_type),
        ("target", rec.target_schema, out.view_type),
    ):
        expected = get_schema(xrpc, schema_ref)
        if class_signature(have) != signature(expected.record):
            raise SchemaError(
                f"lens {rec.name!r}: the installed code's {what} type {have.__name__} does not match the "
                f"published schema {expected.name}@{expected.version} ({schema_ref}); install the commit "
                f"{rec.getter.commit[:12]} of {rec.getter.repository}"
            )
    if register:
        from ..lens import registry

        registry.register(out)
    return out
