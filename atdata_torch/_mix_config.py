"""A weighted mixture in a data config: a split given as a mapping with a ``mix:`` list (see ``atdata_torch.config``).

::

    train:
      mix:
        - data: ${WEB:-shards/web}/train-*.tar     # a path / glob / brace pattern / URL, or a list of them
          weight: 3
        - data: ${CODE:-shards/code}/train-*.tar
          weight: 1
          repeat: true                             # cycles; the web data ends the epoch
      stop: first_exhausted                        # or all_exhausted
      samples: null                                # or an epoch size
      mix_block: 1024
      source_field: source                         # each batch's source index, as batch.source

The keys are :func:`atdata_torch.mixture.mix`'s arguments; ``seed`` and ``shuffle`` are the config's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, get_args

from ._config_values import _check_bool, _check_choice, _check_int, _fail, _unknown
from .dataset import Dataset
from .errors import ConfigError, MixtureError
from .mixture import Mixture, Stop, mix

__all__ = ["SOURCE_KEYS", "SPEC_KEYS", "check_mix_spec", "mixture_from_spec"]

#: The keys of a mixture spec, and of each of its sources.
SPEC_KEYS = ("mix", "stop", "samples", "mix_block", "source_field")
SOURCE_KEYS = ("data", "weight", "repeat")


def _check_data(key: str, value: Any) -> None:
    if isinstance(value, (str, os.PathLike, Dataset)) and not isinstance(value, Mixture):
        return
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return
    raise _fail(
        key, f"expected a path / glob / brace pattern / URL, a non-empty list of them, or a Dataset; got {value!r}"
    )


def check_mix_spec(key: str, spec: Mapping[str, Any]) -> None:
    """Check the shape of a mixture spec (``key``: the split), naming the offending key.

    Raises:
        ConfigError: for an unknown key, a missing or empty ``mix`` list, or a wrongly typed value.

    Example:
        >>> check_mix_spec("train", {"mix": [{"data": "a/*.tar", "weight": 2}, {"data": "b/*.tar"}]})
        >>> check_mix_spec("train", {"mix": [{"data": "a/*.tar", "wieght": 2}]})
        Traceback (most recent call last):
        ...
        atdata_torch.errors.ConfigError: unknown key 'wieght' in train.mix[0] (did you mean 'weight'?); ...
    """
    for name in spec:
        if name not in SPEC_KEYS:
            raise _unknown(str(name), str(name), SPEC_KEYS, "key", where=f"the mixture of {key}")
    sources = spec.get("mix")
    if not isinstance(sources, (list, tuple)) or not sources:
        raise _fail(f"{key}.mix", f"expected a non-empty list of sources ({{data: ..., weight: ...}}), got {sources!r}")
    for i, src in enumerate(sources):
        where = f"{key}.mix[{i}]"
        if not isinstance(src, Mapping):
            raise _fail(where, f"expected a mapping with 'data' (and 'weight', 'repeat'), got {src!r}")
        for name in src:
            if name not in SOURCE_KEYS:
                raise _unknown(str(name), str(name), SOURCE_KEYS, "key", where=where)
        if "data" not in src:
            raise _fail(where, "a source needs 'data' (a path / glob / brace pattern / URL, or a list of them)")
        _check_data(f"{where}.data", src["data"])
        weight = src.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise _fail(f"{where}.weight", f"expected a number > 0, got {weight!r}")
        if "repeat" in src:
            _check_bool(f"{where}.repeat", src["repeat"])
    _check_choice(f"{key}.stop", spec.get("stop", "first_exhausted"), get_args(Stop))
    if spec.get("samples") is not None:
        _check_int(f"{key}.samples", spec["samples"], minimum=1)
    _check_int(f"{key}.mix_block", spec.get("mix_block", 1024), minimum=1)
    field = spec.get("source_field")
    if field is not None and (not isinstance(field, str) or not field.isidentifier()):
        raise _fail(f"{key}.source_field", f"expected a field name (an identifier) or null, got {field!r}")


def mixture_from_spec(key: str, spec: Mapping[str, Any], build: Callable[[Any], Dataset[Any]]) -> Mixture:
    """The mixture a spec describes, each source's ``data`` built by ``build`` (the config's typed dataset).

    Raises:
        ConfigError: for a malformed spec, or a mixture that cannot be built (the reason named).
    """
    check_mix_spec(key, spec)
    sources = list(spec["mix"])
    parts = [build(src["data"]) for src in sources]
    kw: dict[str, Any] = {}
    if any("repeat" in src for src in sources):
        kw["repeat"] = [bool(src.get("repeat", False)) for src in sources]
    try:
        return mix(
            parts,
            [float(src.get("weight", 1)) for src in sources],
            stop=spec.get("stop", "first_exhausted"),
            samples=spec.get("samples"),
            mix_block=spec.get("mix_block", 1024),
            source_field=spec.get("source_field"),
            **kw,
        )
    except MixtureError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
