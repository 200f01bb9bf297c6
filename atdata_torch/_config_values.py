"""The values of a data config: environment variables in dataset specs, importable class names and
the checks of its fields (see :mod:`atdata_torch.config`, which re-exports the public names)."""

from __future__ import annotations

import difflib
import importlib
import os
import re
from collections.abc import Collection, Sequence
from typing import Any

from .errors import ConfigError

__all__ = ["ConfigError", "TypeSpec", "expand_env", "resolve_type", "type_name"]

#: A class, or an importable ``"module:Class"`` string.
TypeSpec = type | str

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"{key}: {message}")


def expand_env(text: str, *, key: str = "value") -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` with environment variables (and a leading ``~``).

    Raises:
        ConfigError: when a variable is unset and has no default, naming ``key``.

    Example:
        >>> os.environ["ATDATA_EXAMPLE_ROOT"] = "/data"
        >>> expand_env("${ATDATA_EXAMPLE_ROOT}/train-{000000..000003}.tar")
        '/data/train-{000000..000003}.tar'
        >>> expand_env("${ATDATA_EXAMPLE_UNSET:-shards}/val.tar")
        'shards/val.tar'
        >>> del os.environ["ATDATA_EXAMPLE_ROOT"]
    """

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise _fail(key, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)")
            return default
        return value

    out = _ENV.sub(sub, text)
    return os.path.expanduser(out) if out.startswith("~") else out


def resolve_type(spec: TypeSpec, *, key: str = "type") -> type:
    """Import a class from ``"module:Class"`` (or ``"module.Class"``); a class is returned as is.

    Raises:
        ConfigError: naming ``key`` when the module or the attribute cannot be found, or is not a class.

    Example:
        >>> resolve_type("atdata_torch.schema:DictSample").__name__
        'DictSample'
    """
    if isinstance(spec, type):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise _fail(key, f"expected a class or an importable 'module:Class' string, got {spec!r}")
    text = spec.strip()
    if ":" in text:
        module_name, _, qualname = text.partition(":")
    else:
        module_name, _, qualname = text.rpartition(".")
    if not module_name or not qualname:
        raise _fail(key, f"{spec!r} is not of the form 'module:Class'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise _fail(key, f"cannot import module {module_name!r} for {spec!r} ({exc}); is it on sys.path?") from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _fail(key, f"module {module_name!r} has no attribute {qualname!r}") from None
    if not isinstance(obj, type):
        raise _fail(key, f"{spec!r} is a {type(obj).__name__}, not a class")
    return obj


def type_name(cls: type) -> str:
    """``"module:QualName"`` of a class (what :func:`resolve_type` reads back).

    Example:
        >>> from atdata_torch.schema import DictSample
        >>> type_name(DictSample)
        'atdata_torch.schema:DictSample'
    """
    return f"{cls.__module__}:{cls.__qualname__}"


def _unknown(key: str, name: str, allowed: Collection[str], what: str, *, where: str | None = None) -> ConfigError:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    place = f" in {where}" if where else ""
    return ConfigError(f"unknown {what} {name!r}{place}{hint}; allowed: {', '.join(sorted(allowed))}")


def _check_int(key: str, value: Any, *, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise _fail(key, f"must be >= {minimum}, got {value}")


def _check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(key, f"expected true or false, got {value!r}")


def _check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise _fail(key, f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
