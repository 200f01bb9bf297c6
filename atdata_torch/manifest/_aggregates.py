"""Per-shard statistics of manifest fields (the header's ``aggregates``), computed as the original computes them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CategoricalAggregate", "NumericAggregate", "SetAggregate", "create_aggregate"]


@dataclass
class CategoricalAggregate:
    """Value counts of a categorical field (values are counted by ``str(value)``).

    Example:
        >>> agg = CategoricalAggregate()
        >>> for v in ["dog", "cat", "dog"]:
        ...     agg.add(v)
        >>> agg.to_dict()
        {'type': 'categorical', 'cardinality': 2, 'value_counts': {'dog': 2, 'cat': 1}}
    """

    value_counts: dict[str, int] = field(default_factory=dict)

    @property
    def cardinality(self) -> int:
        """The number of distinct values."""
        return len(self.value_counts)

    def add(self, value: Any) -> None:
        """Count one value."""
        key = str(value)
        self.value_counts[key] = self.value_counts.get(key, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the header."""
        return {"type": "categorical", "cardinality": self.cardinality, "value_counts": dict(self.value_counts)}


@dataclass
class NumericAggregate:
    """Min, max, mean and count of a numeric field. NaN values are not counted (they would make the mean NaN and
    the header invalid JSON); with no value, ``to_dict()`` gives ``None`` for min and max where the original wrote
    ``Infinity``, which strict JSON parsers reject.

    Example:
        >>> agg = NumericAggregate()
        >>> for v in [1.0, 3.0, 2]:
        ...     agg.add(v)
        >>> agg.to_dict()
        {'type': 'numeric', 'min': 1.0, 'max': 3.0, 'mean': 2.0, 'count': 3}
    """

    _min: float = math.inf
    _max: float = -math.inf
    _sum: float = 0.0
    count: int = 0

    @property
    def min(self) -> float:
        """The smallest value (``inf`` when none)."""
        return self._min

    @property
    def max(self) -> float:
        """The largest value (``-inf`` when none)."""
        return self._max

    @property
    def mean(self) -> float:
        """The mean (0.0 when none)."""
        return self._sum / self.count if self.count else 0.0

    def add(self, value: float) -> None:
        """Record one value."""
        v = float(value)
        if math.isnan(v):
            return
        self._min = min(self._min, v)
        self._max = max(self._max, v)
        self._sum += v
        self.count += 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the header."""
        some = self.count > 0
        return {
            "type": "numeric",
            "min": self._min if some else None,
            "max": self._max if some else None,
            "mean": self.mean,
            "count": self.count,
        }


@dataclass
class SetAggregate:
    """The union of the values of a list field (as strings, sorted in the header).

    Example:
        >>> agg = SetAggregate()
        >>> agg.add(["outdoor", "day"])
        >>> agg.add(["indoor"])
        >>> agg.to_dict()
        {'type': 'set', 'all_values': ['day', 'indoor', 'outdoor']}
    """

    all_values: set[str] = field(default_factory=set)

    def add(self, values: Iterable[Any]) -> None:
        """Record the values of one sample."""
        self.all_values.update(str(v) for v in values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the header."""
        return {"type": "set", "all_values": sorted(self.all_values)}


Aggregate = CategoricalAggregate | NumericAggregate | SetAggregate


def create_aggregate(kind: str) -> Aggregate:
    """A new aggregate for ``"categorical"``, ``"numeric"`` or ``"set"``.

    Raises:
        ValueError: for another kind.

    Example:
        >>> type(create_aggregate("set")).__name__
        'SetAggregate'
    """
    if kind == "categorical":
        return CategoricalAggregate()
    if kind == "numeric":
        return NumericAggregate()
    if kind == "set":
        return SetAggregate()
    raise ValueError(f"unknown aggregate kind {kind!r}: expected 'categorical', 'numeric' or 'set'")
