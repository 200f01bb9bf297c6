"""The package's shape, read from its source (nothing is imported): no import cycles, small modules, simple
functions, and leaf packages that keep to their own private modules.

- Import cycles: the graph of imports between the package's modules, module-level and inside functions alike
  (imports under ``if TYPE_CHECKING:`` are left out: they never run). Each cycle is reported as its strongly
  connected component.
- No module over ``MAX_LINES`` lines; no function (or method, or closure) over cyclomatic complexity ``MAX_CC``,
  as radon counts it (a closure's branches count for the closure, not for the function around it).
- A leaf package (``LEAVES``) imports another leaf only through its public modules, never ``leaf._private``.

Each test fails with the full list of offenders, one per line.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

from radon.complexity import cc_visit

PKG = Path(__file__).resolve().parent.parent / "atdata_torch"
MAX_LINES = 500
MAX_CC = 20
LEAVES = ("index", "atmosphere", "cli", "integrations", "sources")


def _modname(path: Path) -> str:
    parts = ("atdata_torch", *path.relative_to(PKG).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_modname(p): p for p in sorted(PKG.rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:`` (or ``if typing.TYPE_CHECKING:``, ``_TYPE_CHECKING``)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if "TYPE_CHECKING" in name:
                out.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return out


def _imported(module: str, path: Path) -> set[str]:
    """The dotted names ``module`` imports (``from a import b`` gives ``a`` and ``a.b``), relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_only(tree)
    base = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                anchor = ".".join(parts[: len(parts) - (node.level - 1)])
                full = f"{anchor}.{node.module}" if node.module else anchor
            else:
                full = node.module or ""
            names.add(full)
            names.update(f"{full}.{a.name}" for a in node.names)
    return names


@functools.cache
def _graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (a name resolves to its longest module prefix; the package root,
    which only re-exports, is left out)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for m, path in mods.items():
        targets = set()
        for name in _imported(m, path):
            while name and name not in mods:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name and name not in (m, "atdata_torch"):
                targets.add(name)
        graph[m] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, sorted(graph.get(w, ()))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def _functions(blocks: list[Any]) -> list[Any]:
    """radon's functions and methods (it lists both, and classes, which are skipped here) with their closures."""
    out: list[Any] = []
    for b in blocks:
        if not hasattr(b, "closures"):  # a class: its methods are listed on their own
            continue
        out.append(b)
        out.extend(_functions(list(b.closures)))
    return out


def _leaf(module: str) -> str | None:
    """The leaf package ``module`` belongs to (``atdata_torch.index._index`` -> ``index``), if any."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LEAVES else None


def test_no_import_cycles() -> None:
    cycles = [" <-> ".join(c) for c in _cycles(_graph())]
    assert cycles == [], "import cycles (imports inside functions count):\n" + "\n".join(cycles)


def test_no_module_over_max_lines() -> None:
    counts = {m: p.read_text(encoding="utf-8").count("\n") for m, p in _modules().items()}
    over = [f"{m} ({n})" for n, m in sorted(((n, m) for m, n in counts.items() if n > MAX_LINES), reverse=True)]
    assert over == [], f"modules over {MAX_LINES} lines:\n" + "\n".join(over)


def test_no_function_over_max_complexity() -> None:
    over = []
    for m, path in _modules().items():
        for b in _functions(cc_visit(path.read_text(encoding="utf-8"))):
            if b.complexity > MAX_CC:
                over.append((b.complexity, f"{m}:{b.lineno} {b.name}"))
    lines = [f"{cc} {where}" for cc, where in sorted(over, reverse=True)]
    assert lines == [], f"functions over cyclomatic complexity {MAX_CC} (radon):\n" + "\n".join(lines)


def test_leaves_import_no_other_leafs_private_modules() -> None:
    bad = []
    for m, targets in _graph().items():
        a = _leaf(m)
        if a is None:
            continue
        for t in sorted(targets):
            b = _leaf(t)
            if b is not None and b != a and any(seg.startswith("_") for seg in t.split(".")[2:]):
                bad.append(f"{m} -> {t}")
    assert bad == [], "a leaf imports another leaf's private module:\n" + "\n".join(sorted(bad))
