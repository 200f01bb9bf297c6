"""ReadOptions: the one validated, frozen set of read settings, and the keyword sets built from it."""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

import pytest

from atdata_torch.options import OrderKeywords, ReadKeywords, ReadOptions, ShuffleKeywords


def test_defaults_and_frozen() -> None:
    opts = ReadOptions()
    assert (opts.batch_size, opts.shuffle, opts.seed, opts.on_error) == (None, False, 0, "raise")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.seed = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1 or None, got 0"),
        ({"on_error": "ignore"}, "on_error must be 'raise', 'skip' or 'warn', got 'ignore'"),
        ({"last_batch": "keep"}, "last_batch must be 'exact', 'drop' or 'pad', got 'keep'"),
    ],
)
def test_checks(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReadOptions(**kw)  # type: ignore[arg-type]


def test_last_batch_policy() -> None:
    assert ReadOptions().last_batch_for(1) == "exact"
    assert ReadOptions().last_batch_for(2) == "pad"
    assert ReadOptions(drop_last=True).last_batch_for(2) == "drop"
    assert ReadOptions(drop_last=True, last_batch="pad").last_batch_for(1) == "pad"


def test_changed_names_the_non_defaults_in_field_order() -> None:
    assert ReadOptions().changed() == []
    assert ReadOptions(world_size=2, shuffle=True, drop_last=False).changed() == ["shuffle", "drop_last", "world_size"]


def test_keyword_sets_are_the_fields() -> None:
    fields = [f.name for f in dataclasses.fields(ReadOptions)]
    assert set(get_type_hints(ReadKeywords)) == set(fields)
    assert set(get_type_hints(ShuffleKeywords)) == set(fields) - {"batch_size", "shuffle"}
    assert set(get_type_hints(OrderKeywords)) == set(fields) - {"batch_size", "shuffle", "seed", "block_size", "window"}
