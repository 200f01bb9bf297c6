"""Lenses the AT Protocol tests publish by code reference (``_atmo_lenses:label_only``); importable from tests/."""

from __future__ import annotations

import numpy as np

import atdata_torch as atd


@atd.packable
class AtmoFull:
    image: atd.NDArray[np.uint8]
    label: int
    note: str


@atd.packable
class AtmoLabel:
    label: int


@atd.lens
def label_only(s: AtmoFull) -> AtmoLabel:
    return AtmoLabel(label=s.label)


@label_only.putter
def _put_label(v: AtmoLabel, s: AtmoFull) -> AtmoFull:
    return AtmoFull(image=s.image, label=v.label, note=s.note)
