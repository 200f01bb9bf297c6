"""Lenses: the @lens decorator, putters, composition, the registry's path finding, the lens laws,
and lenses as map stages of a dataset."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

import atdata_torch as atd

try:
    import _future_lenses as fut
except ImportError:  # pragma: no cover - when tests/ is a package
    from tests import _future_lenses as fut  # type: ignore[no-redef]

HYP = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# ------------------------------------------------------------------------------------------------
# @atd.lens and the putter


def test_lens_decorator_reads_types_from_annotations_and_registers() -> None:
    @atd.packable
    class DecoSource:
        x: NDArray[np.float32]
        label: str

    @atd.packable
    class DecoView:
        label: str

    @atd.lens
    def deco_view(s: DecoSource) -> DecoView:
        return DecoView(label=s.label.upper())

    assert isinstance(deco_view, atd.Lens)
    assert deco_view.source_type is DecoSource
    assert deco_view.view_type is DecoView
    assert deco_view.name == "deco_view"
    assert not deco_view.has_putter
    src = DecoSource(x=np.zeros(2, np.float32), label="cat")
    assert deco_view.get(src) == DecoView(label="CAT")
    assert deco_view(src) == DecoView(label="CAT")
    # Registered in the process-wide registry: a one-hop path is the lens itself.
    assert atd.lens_registry.find(DecoSource, DecoView) is deco_view
    assert DecoView in atd.lens_registry.reachable(DecoSource)
    assert repr(deco_view) == "Lens(deco_view: DecoSource -> DecoView)"


def test_putter_decorator_adds_the_putter_and_returns_the_function() -> None:
    @atd.packable
    class PutSource:
        n: int
        tag: str

    @atd.packable
    class PutView:
        n: int

    @atd.lens
    def put_view(s: PutSource) -> PutView:
        return PutView(n=s.n)

    def write_back(v: PutView, s: PutSource) -> PutSource:
        return PutSource(n=v.n, tag=s.tag)

    returned = put_view.putter(write_back)
    assert returned is write_back
    assert put_view.has_putter
    assert put_view.put(PutView(n=7), PutSource(n=1, tag="keep")) == PutSource(n=7, tag="keep")
    assert repr(put_view) == "Lens(put_view: PutSource <-> PutView)"


def test_put_without_putter_raises_not_implemented_naming_the_lens() -> None:
    @atd.packable
    class OneWaySource:
        n: int

    @atd.packable
    class OneWayView:
        m: int

    @atd.lens
    def one_way_view(s: OneWaySource) -> OneWayView:
        return OneWayView(m=s.n)

    with pytest.raises(NotImplementedError) as info:
        one_way_view.put(OneWayView(m=1), OneWaySource(n=0))
    msg = str(info.value)
    assert "'one_way_view'" in msg
    assert "OneWaySource -> OneWayView" in msg
    assert "@one_way_view.putter" in msg


def test_lens_without_annotations_is_a_type_error() -> None:
    def no_param_annotation(s):  # type: ignore[no-untyped-def]
        return s

    with pytest.raises(TypeError, match="annotate the getter's parameter"):
        atd.Lens(no_param_annotation)

    def no_return_annotation(s: int):  # type: ignore[no-untyped-def]
        return s

    with pytest.raises(TypeError, match="annotate the getter's return type"):
        atd.Lens(no_return_annotation)

    # Explicit types make annotations unnecessary.
    explicit = atd.Lens(no_param_annotation, source=int, view=str, name="explicit")
    assert (explicit.source_type, explicit.view_type, explicit.name) == (int, str, "explicit")


def test_lens_with_unresolvable_annotation_names_the_lens() -> None:
    def ghost(s: NoSuchSourceType) -> int:  # type: ignore[name-defined] # noqa: F821
        return 0

    with pytest.raises(TypeError, match="cannot resolve the annotations of lens 'ghost'"):
        atd.Lens(ghost)


# ------------------------------------------------------------------------------------------------
# composition


def _int_str_lenses() -> tuple[atd.Lens[int, str], atd.Lens[str, list[str]]]:
    to_str: atd.Lens[int, str] = atd.Lens(lambda n: str(n), lambda v, s: int(v), source=int, view=str, name="to_str")
    to_chars: atd.Lens[str, list[str]] = atd.Lens(
        lambda s: list(s), lambda v, s: "".join(v), source=str, view=list, name="to_chars"
    )
    return to_str, to_chars


def test_composition_get_and_put() -> None:
    to_str, to_chars = _int_str_lenses()
    both = to_str | to_chars
    assert both.source_type is int
    assert both.view_type is list
    assert both.name == "to_str|to_chars"
    assert both.get(123) == ["1", "2", "3"]
    assert both.has_putter
    assert both.put(["4", "5"], 123) == 45


def test_composition_of_typed_lenses_get_and_put() -> None:
    mid = fut.fut_view | fut.fut_label
    src = fut.FutLensSource(x=np.arange(3, dtype=np.float32), label="a", weight=0.5)
    assert mid.get(src) == fut.FutLensLabel(label="a")
    out = mid.put(fut.FutLensLabel(label="b"), src)
    assert out == fut.FutLensSource(x=np.arange(3, dtype=np.float32), label="b", weight=0.5)


def test_composition_with_a_one_way_lens_has_no_putter() -> None:
    to_str, _ = _int_str_lenses()
    one_way: atd.Lens[str, int] = atd.Lens(len, source=str, view=int, name="length")
    composed = to_str | one_way
    assert composed.get(12345) == 5
    assert not composed.has_putter
    with pytest.raises(NotImplementedError, match=r"'to_str\|length'"):
        composed.put(3, 12345)


def test_composition_with_a_non_lens_is_a_type_error() -> None:
    to_str, _ = _int_str_lenses()
    with pytest.raises(TypeError):
        to_str | (lambda s: s)  # type: ignore[operator]


# ------------------------------------------------------------------------------------------------
# the registry


class _A:
    def __init__(self, n: int) -> None:
        self.n = n


class _B:
    def __init__(self, n: int) -> None:
        self.n = n


class _C:
    def __init__(self, n: int) -> None:
        self.n = n


class _D:
    def __init__(self, n: int) -> None:
        self.n = n


def _edge(src: type, dst: type, add: int) -> atd.Lens[object, object]:
    return atd.Lens(
        lambda s: dst(s.n + add),
        lambda v, s: src(v.n - add),
        source=src,
        view=dst,
        name=f"{src.__name__}{dst.__name__}",
    )


def test_registry_finds_a_multi_hop_path() -> None:
    reg = atd.LensRegistry()
    reg.register(_edge(_A, _B, 1))
    reg.register(_edge(_B, _C, 10))
    assert len(reg) == 2
    a_to_c = reg.find(_A, _C)
    assert a_to_c.source_type is _A
    assert a_to_c.view_type is _C
    assert a_to_c.name == "_A_B|_B_C"
    out = a_to_c.get(_A(1))
    assert isinstance(out, _C)
    assert out.n == 12
    back = a_to_c.put(_C(100), _A(0))
    assert isinstance(back, _A)
    assert back.n == 89
    assert reg.reachable(_A) == [_B, _C]
    assert reg.reachable(_C) == []


def test_registry_prefers_the_shortest_path() -> None:
    reg = atd.LensRegistry()
    reg.register(_edge(_A, _B, 1))
    reg.register(_edge(_B, _C, 1))
    reg.register(_edge(_C, _D, 1))
    assert reg.find(_A, _D).get(_A(0)).n == 3
    reg.register(_edge(_A, _D, 1000))
    assert reg.find(_A, _D).get(_A(0)).n == 1000
    assert reg.reachable(_A)[0] in (_B, _D)  # nearest first
    assert reg.reachable(_A)[-1] is _C


def test_registry_register_replaces_and_unregister_removes() -> None:
    reg = atd.LensRegistry()
    first = _edge(_A, _B, 1)
    second = _edge(_A, _B, 2)
    reg.register(first)
    reg.register(second)
    assert len(reg) == 1
    assert reg.find(_A, _B) is second
    reg.unregister(first)  # not the registered one: no effect
    assert reg.find(_A, _B) is second
    reg.unregister(second)
    assert len(reg) == 0
    with pytest.raises(atd.LensNotFoundError):
        reg.find(_A, _B)


def test_registry_handles_cycles() -> None:
    reg = atd.LensRegistry()
    reg.register(_edge(_A, _B, 1))
    reg.register(_edge(_B, _A, 1))
    reg.register(_edge(_B, _C, 1))
    assert reg.find(_A, _C).get(_A(0)).n == 2
    assert set(reg.reachable(_A)) == {_B, _C}
    with pytest.raises(atd.LensNotFoundError):
        reg.find(_A, _D)


def test_registry_identity_for_the_same_type() -> None:
    reg = atd.LensRegistry()
    ident = reg.find(_A, _A)
    a = _A(5)
    assert ident.get(a) is a
    other = _A(6)
    assert ident.put(other, a) is other


def test_lens_not_found_lists_what_is_reachable() -> None:
    reg = atd.LensRegistry()
    reg.register(_edge(_A, _B, 1))
    reg.register(_edge(_B, _C, 1))
    with pytest.raises(atd.LensNotFoundError) as info:
        reg.find(_A, _D)
    err = info.value
    assert isinstance(err, LookupError)
    assert isinstance(err, atd.AtdataError)
    msg = str(err)
    assert "no lens converts _A to _D" in msg
    assert "reach: _B, _C" in msg
    assert "@atd.lens def f(s: _A) -> _D" in msg
    with pytest.raises(atd.LensNotFoundError, match="reach: nothing"):
        reg.find(_D, _A)
    # It crosses DataLoader worker boundaries intact.
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is atd.LensNotFoundError
    assert str(again) == msg


def test_global_registry_multi_hop_with_decorated_lenses() -> None:
    @atd.packable
    class HopA:
        n: int

    @atd.packable
    class HopB:
        n: int
        s: str

    @atd.packable
    class HopC:
        s: str

    @atd.lens
    def hop_ab(a: HopA) -> HopB:
        return HopB(n=a.n, s=str(a.n))

    @atd.lens
    def hop_bc(b: HopB) -> HopC:
        return HopC(s=b.s * 2)

    a_to_c = atd.lens_registry.find(HopA, HopC)
    assert a_to_c.get(HopA(n=4)) == HopC(s="44")
    assert atd.lens_registry.reachable(HopA)[:2] == [HopB, HopC]
    with pytest.raises(atd.LensNotFoundError, match="HopB, HopC"):
        atd.lens_registry.find(HopA, atd.DictSample)


# ------------------------------------------------------------------------------------------------
# from __future__ import annotations


def test_future_annotations_module_level_lenses() -> None:
    assert fut.fut_view.source_type is fut.FutLensSource
    assert fut.fut_view.view_type is fut.FutLensView
    assert fut.fut_label.source_type is fut.FutLensView
    src = fut.FutLensSource(x=np.ones(2, np.float32), label="z", weight=2.0)
    assert atd.lens_registry.find(fut.FutLensSource, fut.FutLensLabel).get(src) == fut.FutLensLabel(label="z")
    # Built directly, not through the decorator: annotations resolve against the module.
    direct = fut.unregistered_lens()
    assert direct.source_type is fut.FutLensSource
    assert direct.view_type is fut.FutLensLabel
    assert direct.get(src) == fut.FutLensLabel(label="z")


def test_future_annotations_lenses_inside_a_function() -> None:
    source_t, view_t, local = fut.make_local_lens()
    assert local.source_type is source_t
    assert local.view_type is view_t
    assert atd.lens_registry.find(source_t, view_t).get(source_t(n=21)) == view_t(doubled=42)


def test_future_annotations_lens_as_a_dataset_stage(write_dataset: Callable[..., atd.Dataset]) -> None:
    samples = [fut.FutLensSource(x=np.full(2, i, np.float32), label=f"l{i}", weight=float(i)) for i in range(5)]
    ds = write_dataset(samples)
    views = list(ds.as_type(fut.FutLensLabel))
    assert views == [fut.FutLensLabel(label=f"l{i}") for i in range(5)]


# ------------------------------------------------------------------------------------------------
# lens laws (hypothesis)


@atd.packable
class LawFull:
    x: NDArray[np.float32]
    label: str
    score: float


@atd.packable
class LawMid:
    label: str
    score: float


@atd.packable
class LawLabel:
    label: str


@atd.lens
def law_mid(s: LawFull) -> LawMid:
    return LawMid(label=s.label, score=s.score)


@law_mid.putter
def _law_mid_put(v: LawMid, s: LawFull) -> LawFull:
    return LawFull(x=s.x, label=v.label, score=v.score)


@atd.lens
def law_label(s: LawMid) -> LawLabel:
    return LawLabel(label=s.label)


@law_label.putter
def _law_label_put(v: LawLabel, s: LawMid) -> LawMid:
    return LawMid(label=v.label, score=s.score)


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
arrays32 = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, max_side=4), elements=finite)
fulls = st.builds(LawFull, x=arrays32, label=st.text(max_size=8), score=finite)
mids = st.builds(LawMid, label=st.text(max_size=8), score=finite)
labels = st.builds(LawLabel, label=st.text(max_size=8))

LAW_LENSES: dict[str, tuple[Callable[[], atd.Lens[object, object]], st.SearchStrategy[object]]] = {
    "single": (lambda: law_mid, mids),
    "second": (lambda: law_label, labels),
    "composed": (lambda: law_mid | law_label, labels),
    "registry": (lambda: atd.lens_registry.find(LawFull, LawLabel), labels),
}


def _source_strategy(name: str) -> st.SearchStrategy[object]:
    return mids if name == "second" else fulls


@pytest.mark.parametrize("name", sorted(LAW_LENSES))
@HYP
@given(data=st.data())
def test_lens_law_get_put(name: str, data: st.DataObject) -> None:
    """get(put(v, s)) == v"""
    make, views = LAW_LENSES[name]
    ln = make()
    s = data.draw(_source_strategy(name), label="source")
    v = data.draw(views, label="view")
    assert ln.get(ln.put(v, s)) == v


@pytest.mark.parametrize("name", sorted(LAW_LENSES))
@HYP
@given(data=st.data())
def test_lens_law_put_get(name: str, data: st.DataObject) -> None:
    """put(get(s), s) == s"""
    make, _ = LAW_LENSES[name]
    ln = make()
    s = data.draw(_source_strategy(name), label="source")
    assert ln.put(ln.get(s), s) == s


def test_lens_law_detects_an_unlawful_putter() -> None:
    """The law checks can fail: a putter that drops the view breaks get(put(v, s)) == v."""
    bad: atd.Lens[LawFull, LawMid] = atd.Lens(law_mid.get, lambda v, s: s, source=LawFull, view=LawMid, name="bad")
    s = LawFull(x=np.zeros(1, np.float32), label="a", score=1.0)
    v = LawMid(label="b", score=1.0)
    assert bad.get(bad.put(v, s)) != v


@HYP
@given(
    full=fulls,
    extra=st.dictionaries(st.text(min_size=1, max_size=4).map(lambda k: "extra_" + k), st.integers()),
)
def test_builtin_dict_lens_laws(full: LawFull, extra: dict[str, int]) -> None:
    """@packable registers DictSample <-> cls; it is lawful on typed dict samples, and keeps extras."""
    ln = atd.lens_registry.find(atd.DictSample, LawFull)
    assert ln.has_putter
    s = atd.DictSample({**full.to_dict(), **extra})
    assert ln.get(s) == full
    assert ln.put(ln.get(s), s) == s
    changed = LawFull(x=full.x + 1, label=full.label + "!", score=full.score)
    put = ln.put(changed, s)
    assert ln.get(put) == changed
    assert {k: put[k] for k in extra} == extra


# ------------------------------------------------------------------------------------------------
# lenses as map stages during iteration


@atd.packable
class StageSource:
    x: NDArray[np.float32]
    label: int
    name: str


@atd.packable
class StageView:
    x2: NDArray[np.float32]
    tag: str


@atd.packable
class StageTag:
    tag: str
    length: int


@atd.lens
def stage_view(s: StageSource) -> StageView:
    return StageView(x2=s.x * 2, tag=f"{s.name}:{s.label}")


@atd.lens
def stage_tag(v: StageView) -> StageTag:
    return StageTag(tag=v.tag, length=len(v.tag))


def _stage_samples(n: int = 10) -> list[StageSource]:
    return [StageSource(x=np.full(3, i, np.float32), label=i, name=f"s{i}") for i in range(n)]


def test_as_type_yields_views(write_dataset: Callable[..., atd.Dataset]) -> None:
    ds = write_dataset(_stage_samples(), maxcount=4)
    views = ds.as_type(StageView)
    assert views.sample_type is StageView
    out = list(views)
    assert [type(v) for v in out] == [StageView] * 10
    assert [v.tag for v in out] == [f"s{i}:{i}" for i in range(10)]
    for i, v in enumerate(out):
        np.testing.assert_array_equal(v.x2, np.full(3, 2 * i, np.float32))
    assert len(views) == 10
    assert views.get("00000003") == StageView(x2=np.full(3, 6, np.float32), tag="s3:3")
    assert "lens" in repr(views)
    # The original dataset is unchanged.
    assert next(iter(ds)) == _stage_samples(1)[0]


def test_as_type_batched(write_dataset: Callable[..., atd.Dataset]) -> None:
    ds = write_dataset(_stage_samples(), maxcount=4)
    batches = list(ds.as_type(StageView).ordered(batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    first = batches[0]
    assert isinstance(first, atd.SampleBatch)
    assert first.sample_type is StageView
    assert first.fields == ["x2", "tag"]
    assert isinstance(first.x2, np.ndarray)
    assert first.x2.shape == (4, 3)
    assert first.x2.dtype == np.float32
    np.testing.assert_array_equal(first.x2[:, 0], [0, 2, 4, 6])
    assert first.tag == ["s0:0", "s1:1", "s2:2", "s3:3"]
    assert first.keys == ["00000000", "00000001", "00000002", "00000003"]


def test_as_type_shuffled_batched_covers_every_sample(
    write_dataset: Callable[..., atd.Dataset],
) -> None:
    ds = write_dataset(_stage_samples(), maxcount=4)
    tags = [t for b in ds.as_type(StageView).shuffled(batch_size=3, seed=5) for t in b.tag]
    assert sorted(tags) == sorted(f"s{i}:{i}" for i in range(10))


def test_as_type_multi_hop(write_dataset: Callable[..., atd.Dataset]) -> None:
    ds = write_dataset(_stage_samples(), maxcount=4)
    tagged = ds.as_type(StageTag)
    out = list(tagged)
    assert out == [StageTag(tag=f"s{i}:{i}", length=len(f"s{i}:{i}")) for i in range(10)]
    batch = next(iter(tagged.ordered(batch_size=10)))
    assert batch.length == [len(f"s{i}:{i}") for i in range(10)]
    # Chaining two as_type calls gives the same result as the multi-hop path.
    assert list(ds.as_type(StageView).as_type(StageTag)) == out


def test_as_type_without_a_path_raises_lens_not_found(
    write_dataset: Callable[..., atd.Dataset],
) -> None:
    @atd.packable
    class Unreachable:
        q: int

    ds = write_dataset(_stage_samples(3))
    with pytest.raises(atd.LensNotFoundError, match="StageView") as info:
        ds.as_type(Unreachable)
    assert isinstance(info.value, LookupError)
    assert ds.as_type(StageSource) is ds


def test_dict_dataset_as_packable(write_dataset: Callable[..., atd.Dataset]) -> None:
    written = write_dataset(_stage_samples(), maxcount=4)
    raw = atd.Dataset[atd.DictSample](written.list_shards())
    first = next(iter(raw))
    assert isinstance(first, atd.DictSample)
    typed = raw.as_type(StageSource)
    assert typed.sample_type is StageSource
    assert list(typed) == _stage_samples()
    batch = next(iter(typed.ordered(batch_size=4)))
    assert batch.sample_type is StageSource
    assert batch.x.shape == (4, 3)
    assert batch.label == [0, 1, 2, 3]
    # Through the registry (a stage already exists, so the shards cannot decode straight into it),
    # and onwards along a multi-hop path.
    staged = raw.filter(lambda s: s["label"] % 2 == 0).as_type(StageSource)
    assert [s.label for s in staged] == [0, 2, 4, 6, 8]
    assert [type(s) for s in staged] == [StageSource] * 5
    assert [t.tag for t in raw.as_type(StageSource).as_type(StageTag)] == [f"s{i}:{i}" for i in range(10)]
    assert [t.tag for t in staged.as_type(StageTag)] == [f"s{i}:{i}" for i in range(0, 10, 2)]


def test_dict_dataset_as_packable_missing_field_is_a_decode_error(
    write_dataset: Callable[..., atd.Dataset],
) -> None:
    @atd.packable
    class NeedsMore:
        label: int
        missing_field: str

    written = write_dataset(_stage_samples(2))
    raw = atd.Dataset(written.list_shards())
    with pytest.raises(atd.DecodeError) as info:
        list(raw.as_type(NeedsMore))
    assert info.value.field == "missing_field"
    assert info.value.key == "00000000"


def test_lens_does_not_import_schema() -> None:
    # schema imports lens (to register each packable class's DictSample lens), never the other way round.
    import subprocess
    import sys

    code = "import sys, atdata_torch.lens\nprint('atdata_torch.schema' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
