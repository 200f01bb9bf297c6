"""The original atdata's remaining top-level names: ``main`` (the command line as a function) and the deprecated
``schema_to_type()`` / ``AbstractIndex``.

``atdata_torch.main(["info", "train.tar"])`` runs the ``atdata-torch`` command line and returns its exit code
instead of exiting, as the original's ``atdata.main(argv)`` does. The deprecated names warn with the original's
words (so warning filters written for the original keep matching) and point at what replaces them.

Example:
    >>> import atdata_torch as atd
    >>> atd.main(["version"])  # doctest: +ELLIPSIS
    atdata-torch ...
    0
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["ABSTRACT_INDEX_WARNING", "SCHEMA_TO_TYPE_WARNING", "abstract_index", "main", "schema_to_type"]

#: The original's warning texts, word for word.
SCHEMA_TO_TYPE_WARNING = "atdata.schema_to_type() is deprecated, use index.get_schema_type() instead"
ABSTRACT_INDEX_WARNING = "atdata.AbstractIndex is deprecated. Use atdata.Index directly as the type annotation instead."


def main(argv: list[str] | None = None) -> int:
    """Run the ``atdata-torch`` command line with ``argv`` (default: ``sys.argv[1:]``); return its exit code.

    Never exits the interpreter: 0 success, 1 failure, 2 usage error (the command's own message is printed, as on
    the command line). An unexpected exception is printed to stderr and gives 1.

    Args:
        argv: The arguments after the program name, e.g. ``["info", "train.tar", "--json"]``.
    """
    import click

    from .cli import main as group

    try:
        rv = group.main(args=argv, prog_name="atdata-torch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # the original returns 1 on any error; say what it was
        print(f"atdata-torch: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0


def schema_to_type(schema: Mapping[str, Any], *, use_cache: bool = True) -> type:
    """Deprecated (as in the original): the ``@packable`` class a schema record describes; use
    ``index.get_schema_type(ref)`` instead.

    Takes the original's local schema records (``{"name", "version", "fields": [{"name", "fieldType",
    "optional"}]}``) and ``science.alt.dataset.schema`` records. No stored code runs.

    Args:
        schema: The schema record.
        use_cache: Accepted for the original's signature; the same record always gives the same class here.

    Raises:
        SchemaError: the record cannot be turned into a class (also a ``TypeError``).
    """
    warnings.warn(SCHEMA_TO_TYPE_WARNING, DeprecationWarning, stacklevel=2)
    from .records import type_from_record

    return type_from_record(schema)


def abstract_index() -> type:
    """The deprecated ``AbstractIndex``: warns (the original's words) and returns :class:`~atdata_torch.Index`."""
    warnings.warn(ABSTRACT_INDEX_WARNING, DeprecationWarning, stacklevel=3)
    from .index import Index

    return Index
