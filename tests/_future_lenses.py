"""Lenses defined in a module with ``from __future__ import annotations`` (string annotations).

Imported by test_lens.py; kept in its own module so that the test module uses ordinary annotations.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

import atdata_torch as atd


@atd.packable
class FutLensSource:
    x: NDArray[np.float32]
    label: str
    weight: float


@atd.packable
class FutLensView:
    label: str
    weight: float


@atd.packable
class FutLensLabel:
    label: str


@atd.lens
def fut_view(s: FutLensSource) -> FutLensView:
    return FutLensView(label=s.label, weight=s.weight)


@fut_view.putter
def fut_view_put(v: FutLensView, s: FutLensSource) -> FutLensSource:
    return FutLensSource(x=s.x, label=v.label, weight=v.weight)


@atd.lens
def fut_label(s: FutLensView) -> FutLensLabel:
    return FutLensLabel(label=s.label)


@fut_label.putter
def fut_label_put(v: FutLensLabel, s: FutLensView) -> FutLensView:
    return FutLensView(label=v.label, weight=s.weight)


def unregistered_lens() -> atd.Lens[FutLensSource, FutLensLabel]:
    """A ``Lens`` built directly (not registered) from a string-annotated getter."""

    def label_of(s: FutLensSource) -> FutLensLabel:
        return FutLensLabel(label=s.label)

    return atd.Lens(label_of)


def make_local_lens() -> tuple[type, type, atd.Lens[object, object]]:
    """Sample types and a lens defined inside a function: the string annotations name locals."""

    @atd.packable
    class FutLocalSource:
        n: int

    @atd.packable
    class FutLocalView:
        doubled: int

    @atd.lens
    def fut_local(s: FutLocalSource) -> FutLocalView:
        return FutLocalView(doubled=2 * s.n)

    return FutLocalSource, FutLocalView, fut_local
