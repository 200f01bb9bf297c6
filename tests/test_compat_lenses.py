"""Lenses through the original atdata's spelling (issue 17): ``LensNetwork().transform``, ``Lens.identity``, ``@``
composition, the original's ``LensNotFoundError`` message, and a lens without a putter."""

from __future__ import annotations

import pickle

import pytest

import atdata_torch as atdata
from atdata_torch import Lens, LensNetwork, lens, packable


@packable
class CmpA:
    n: int


@packable
class CmpB:
    m: int


@packable
class CmpC:
    s: str


@packable
class CmpLonely:
    z: int


@lens
def cmp_a2b(a: CmpA) -> CmpB:
    return CmpB(m=a.n * 2)


@lens
def cmp_b2c(b: CmpB) -> CmpC:
    return CmpC(s=str(b.m))


@cmp_b2c.putter
def _cmp_c2b(c: CmpC, b: CmpB) -> CmpB:
    return CmpB(m=int(c.s))


def test_lens_network_is_the_process_wide_registry() -> None:
    assert LensNetwork() is LensNetwork()
    assert LensNetwork() is atdata.lens_registry
    assert isinstance(LensNetwork(), atdata.LensRegistry)
    assert len(LensNetwork()) >= 2  # LensNetwork() keeps what was registered (it is not reset by a call)


def test_transform_returns_the_registered_lens() -> None:
    assert LensNetwork().transform(CmpA, CmpB) is cmp_a2b
    assert LensNetwork().transform(CmpA, CmpB)(CmpA(n=2)) == CmpB(m=4)


def test_transform_finds_multi_hop_paths_where_the_original_did_not() -> None:
    # The original looked up direct lenses only (A -> C raised there): ours is a superset.
    assert LensNetwork().transform(CmpA, CmpC)(CmpA(n=3)) == CmpC(s="6")


def test_transform_error_is_the_originals_message_and_a_value_error() -> None:
    with pytest.raises(ValueError) as info:
        LensNetwork().transform(CmpB, CmpLonely)
    err = info.value
    assert isinstance(err, atdata.LensNotFoundError) and isinstance(err, LookupError)
    assert err.source_type is CmpB and err.view_type is CmpLonely
    assert err.available_targets == [(CmpC, "cmp_b2c")]
    text = str(err)
    assert text.startswith("No lens transforms CmpB \u2192 CmpLonely")
    assert "Available lenses from CmpB:\n  - CmpB \u2192 CmpC (via cmp_b2c)" in text
    assert "def cmpb_to_cmplonely(source: CmpB) -> CmpLonely:" in text


def test_lens_not_found_takes_the_originals_constructor_and_ours() -> None:
    orig = atdata.LensNotFoundError(CmpA, CmpLonely, [(CmpB, "cmp_a2b")])
    assert "  - CmpA \u2192 CmpB (via cmp_a2b)" in str(orig)
    ours = atdata.LensNotFoundError("no lens", field="x")
    assert str(ours) == "no lens [field=x]" and ours.view_type is None
    assert str(pickle.loads(pickle.dumps(orig))) == str(orig)


def test_identity_gets_the_source_and_puts_the_view() -> None:
    ident = Lens.identity(CmpA)
    assert ident.source_type is CmpA and ident.view_type is CmpA
    assert ident.get(CmpA(n=1)) == CmpA(n=1)
    assert ident.put(CmpA(n=2), CmpA(n=1)) == CmpA(n=2)
    assert (cmp_a2b @ Lens.identity(CmpA))(CmpA(n=5)) == CmpB(m=10)


def test_matmul_composes_right_to_left_like_the_original() -> None:
    composed = cmp_b2c @ cmp_a2b  # a2b first, then b2c
    assert composed.source_type is CmpA and composed.view_type is CmpC
    assert composed(CmpA(n=3)) == (cmp_a2b | cmp_b2c)(CmpA(n=3)) == CmpC(s="6")
    with pytest.raises(TypeError):
        cmp_b2c @ 3  # type: ignore[operator]


def test_matmul_putter_composes_when_both_have_one() -> None:
    @lens
    def cmp_b2b(b: CmpB) -> CmpB:
        return CmpB(m=b.m + 1)

    @cmp_b2b.putter
    def _put(v: CmpB, b: CmpB) -> CmpB:
        return CmpB(m=v.m - 1)

    both = cmp_b2c @ cmp_b2b  # B -> B -> C
    assert both.put(CmpC(s="10"), CmpB(m=0)) == CmpB(m=9)


def test_a_lens_without_a_putter_raises_a_clear_error() -> None:
    # The original returned the source unchanged (dropping the view's changes); we raise, naming the fix.
    with pytest.raises(atdata.LensPutterError, match=r"@cmp_a2b\.putter") as info:
        cmp_a2b.put(CmpB(m=9), CmpA(n=1))
    assert isinstance(info.value, NotImplementedError) and isinstance(info.value, atdata.AtdataError)
    with pytest.raises(NotImplementedError):
        (cmp_b2c @ cmp_a2b).put(CmpC(s="1"), CmpA(n=1))  # one side has no putter


def test_a_lens_carries_its_getters_name() -> None:
    assert cmp_a2b.__name__ == "cmp_a2b"
