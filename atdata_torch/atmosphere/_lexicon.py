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

The records are built and read in one module per kind (``_lex_base``: collections, at-uris and checks;
``_lex_schema``, ``_lex_entry`` (entries and labels), ``_lex_lens``); this module gathers them as the one namespace
the rest of the package uses (``from . import _lexicon as lex``).
"""

from __future__ import annotations

from ._lex_base import (
    COLLECTIONS,
    LEGACY_COLLECTIONS,
    LEGACY_NS,
    NDARRAY_REF,
    NO_CHECKSUM,
    NS,
    AtUri,
    check_no_floats,
    kind_of,
    now_iso,
)
from ._lex_entry import (
    DatasetRecord,
    LabelRecord,
    Shard,
    blob_url,
    entry_record,
    label_record,
    parse_entry,
    parse_label,
)
from ._lex_lens import CodeRef, LensRecord, lens_record, parse_lens
from ._lex_schema import EXT_KEY, SchemaRecord, class_signature, schema_record, schema_type, signature

__all__ = [
    "COLLECTIONS",
    "EXT_KEY",
    "LEGACY_COLLECTIONS",
    "LEGACY_NS",
    "NDARRAY_REF",
    "NO_CHECKSUM",
    "NS",
    "AtUri",
    "CodeRef",
    "DatasetRecord",
    "LabelRecord",
    "LensRecord",
    "SchemaRecord",
    "Shard",
    "blob_url",
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
