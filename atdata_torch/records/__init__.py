"""Schema and lens records and their semantic versions: the record types the index and the AT Protocol share.

The index (``atdata_torch.index``) stores these records in SQLite or Redis; the AT Protocol client
(``atdata_torch.atmosphere``) publishes its own lexicon records built from the same schema records. Both import
them from here, so neither leaf imports the other.

- schema records in the original atdata's local JSON, and ``@packable`` classes rebuilt from them;
- lens records (code references or field mappings) and lenses rebuilt from them, importing installed code only;
- semantic versions (``major.minor.patch``).

Example:
    >>> import atdata_torch as atd
    >>> from atdata_torch.records import build_schema_record, latest_semver, type_from_record
    >>> @atd.packable
    ... class Point:
    ...     x: float
    >>> rec = build_schema_record(Point, version="1.0.0")
    >>> type_from_record(rec)(x=1.5).x, latest_semver(["1.0.9", "1.0.10"])
    (1.5, '1.0.10')
"""

from __future__ import annotations

from ._lenses import FieldMappingLens, import_code_ref, lens_from_record, lens_record
from ._schemas import (
    EXT,
    LEGACY_SCHEMA_PREFIX,
    LENS_PREFIX,
    SCHEMA_PREFIX,
    FieldHint,
    HintTracker,
    build_schema_record,
    class_signature,
    parse_lens_ref,
    parse_schema_ref,
    record_fields,
    record_signature,
    schema_ref,
    type_from_record,
)
from ._semver import latest_semver, parse_semver

__all__ = [
    "EXT",
    "LEGACY_SCHEMA_PREFIX",
    "LENS_PREFIX",
    "SCHEMA_PREFIX",
    "FieldHint",
    "FieldMappingLens",
    "HintTracker",
    "build_schema_record",
    "class_signature",
    "import_code_ref",
    "latest_semver",
    "lens_from_record",
    "lens_record",
    "parse_lens_ref",
    "parse_schema_ref",
    "parse_semver",
    "record_fields",
    "record_signature",
    "schema_ref",
    "type_from_record",
]
