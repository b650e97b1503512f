"""The package's import graph has no cycle.

The graph is read from the source with ``ast`` (nothing is imported), so it also sees imports
that run late: every ``import enrich.x``, ``from enrich.x import y``, ``from enrich import x``
and relative import, at module level or inside a function (a function-level import is a
dependency all the same: it only hides a cycle from the interpreter until the function runs),
and ``importlib.import_module`` of a module named by a string in the importing module. Not
counted: imports under ``if TYPE_CHECKING:``, which never run and exist to name a type in an
annotation. An edge goes to the module named (``enrich.providers`` for ``from enrich.providers
import Provider``), not to the parent packages the interpreter also initialises on the way.

``test_no_import_cycle`` fails on any cycle; the three the package once had (engine ↔ workers,
the provider registry ↔ the providers, the CLI ↔ its command modules) keep a test each that
names what broke them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    where: str  # path:line of the import


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name (a package by its own)."""
    out = {}
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the nodes inside ``if TYPE_CHECKING:`` blocks (``typing.TYPE_CHECKING`` too)."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = (test.id if isinstance(test, ast.Name)
                    else test.attr if isinstance(test, ast.Attribute) else None)
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    hidden.update(id(n) for n in ast.walk(stmt))
    return hidden


def _imported_names(node: ast.AST, module: str, is_package: bool,
                    tree: ast.Module) -> Iterable[str]:
    """The dotted names ``node`` imports (candidates: resolved against the modules later)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the importing module's package, up level-1 times
            base = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:
            yield f"{base}.{alias.name}"  # a submodule, else resolved to ``base`` itself
    elif isinstance(node, ast.Call) and _is_import_module(node.func):
        # importlib.import_module(name): the strings of this module that name a module
        # (a literal argument, or names listed in a tuple the call iterates over).
        for const in ast.walk(tree):
            if isinstance(const, ast.Constant) and isinstance(const.value, str):
                yield const.value


def _is_import_module(func: ast.expr) -> bool:
    return ((isinstance(func, ast.Attribute) and func.attr == "import_module")
            or (isinstance(func, ast.Name) and func.id in ("import_module", "__import__")))


def import_edges(root: Path, package: str) -> list[Edge]:
    """Every import of one module of ``package`` by another (first occurrence per pair)."""
    mods = modules(root, package)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[tuple[str, str], Edge] = {}
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        hidden = _type_checking_only(tree)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            for name in _imported_names(node, module, is_package, tree):
                if isinstance(node, ast.Call) and name not in mods:
                    continue  # an ordinary string, not a module name
                target = resolve(name)
                if target and target != module and (module, target) not in edges:
                    where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
                    edges[(module, target)] = Edge(module, target, where)
    return sorted(edges.values(), key=lambda e: (e.source, e.target))


def cycles(edges: Iterable[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges, in order) per strongly connected component of the graph."""
    out: dict[str, list[Edge]] = {}
    for e in edges:
        out.setdefault(e.source, []).append(e)
        out.setdefault(e.target, [])
    # Tarjan's algorithm, iterative.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(out):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            for j in range(i, len(out[v])):
                w = out[v][j].target
                if w not in index:
                    work.append((v, j + 1))
                    work.append((w, 0))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        components.append(comp)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
    return [_one_cycle(comp, out) for comp in components]


def _one_cycle(comp: set[str], out: dict[str, list[Edge]]) -> list[Edge]:
    """A shortest cycle through the component's first module (breadth-first)."""
    first = min(comp)
    came: dict[str, Edge] = {}
    frontier = [first]
    while frontier:
        nxt = []
        for v in frontier:
            for e in out[v]:
                if e.target not in comp or e.target in came:
                    continue
                came[e.target] = e
                if e.target == first:
                    path = [e]
                    while path[0].source != first:
                        path.insert(0, came[path[0].source])
                    return path
                nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"no cycle through {first} in {sorted(comp)}")  # pragma: no cover


def describe(cycle: list[Edge]) -> str:
    return " -> ".join([cycle[0].source] + [f"{e.target} ({e.where})" for e in cycle])


# The command modules the CLI package imports (once a cycle through enrich.cli).
CLI_PLUGINS = {("enrich.cli", f"enrich.cli.{m}")
               for m in ("service", "backfill", "alerts", "quality")}


@pytest.fixture(scope="module")
def graph() -> list[Edge]:
    return import_edges(ROOT, "enrich")


def _cycles_through(edges: list[Edge], members: set[str]) -> list[str]:
    return [describe(c) for c in cycles(edges) if members <= {e.source for e in c}]


def test_no_import_cycle(graph):
    """No cycle anywhere in the package (the tests below name the three there were)."""
    found = cycles(graph)
    assert not found, "import cycle(s):\n" + "\n".join(describe(c) for c in found)


def test_no_cycle_engine_workers(graph):
    # Broken by enrich/pipeline/run_model.py (StepResult, SymbolResult, LogBuffer, fetched_for below
    # both), ``run_in_processes(..., record=partial(engine.record_task, log, run_id))`` and
    # ``Job(..., engine_factory=type(engine))``: workers.py imports nothing from the engine.
    assert not _cycles_through(graph, {"enrich.pipeline.engine", "enrich.pipeline.workers"})


def test_no_cycle_providers_factory(graph):
    # Broken by enrich/providers/base.py: the protocol and its value types live below the
    # providers, which import them from there; the package keeps make_provider.
    members = {"enrich.providers", "enrich.providers.sample.provider"}
    assert not _cycles_through(graph, members)
    assert not _cycles_through(graph, {"enrich.providers", "enrich.providers.massive.provider"})


def test_no_cycle_cli_plugins(graph):
    # Broken by the enrich/cli/ package: the helpers the command modules share live in
    # enrich.cli.common, and the entry point (enrich.cli) imports the command modules plainly.
    assert not [m for (_, m) in CLI_PLUGINS if _cycles_through(graph, {"enrich.cli", m})]


# -- the walker itself, on a package written for it ------------------------------------------
def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_walker_finds_each_kind_of_import(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\nfrom pkg.c import thing\n",
        "pkg/b.py": "def f():\n    from . import d\n",
        "pkg/c.py": "from .sub.e import x\nthing = 1\n",
        "pkg/d.py": "import importlib\nfor m in ('pkg.sub', 'not a module'):\n"
                    "    importlib.import_module(m)\n",
        "pkg/sub/__init__.py": "from ..a import y\n",
        "pkg/sub/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                        "    from pkg import a\nx = 1\n",
    })
    got = {(e.source, e.target) for e in import_edges(tmp_path, "pkg")}
    assert got == {("pkg.a", "pkg.b"), ("pkg.a", "pkg.c"), ("pkg.b", "pkg.d"),
                   ("pkg.c", "pkg.sub.e"), ("pkg.d", "pkg.sub"), ("pkg.sub", "pkg.a")}


def test_walker_names_the_cycle(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def late():\n    from pkg.c import z\n",
        "pkg/c.py": "import pkg.a\nz = 1\n",
        "pkg/d.py": "import pkg.a\n",  # into the cycle, not on it
    })
    found = cycles(import_edges(tmp_path, "pkg"))
    assert [describe(c) for c in found] == [
        "pkg.a -> pkg.b (pkg/a.py:1) -> pkg.c (pkg/b.py:2) -> pkg.a (pkg/c.py:1)"]


# -- the layout: which modules sit at the top of enrich/, and which way imports run -----------
# The folders in data-flow order (README, "How the code is laid out"). A module at the top of
# enrich/ is either a foundation every folder may use, or an application module that ties the
# folders together for the service, the API and the pages.
FOLDERS = ("providers", "checks", "store", "pipeline", "backfill", "quant", "views", "alerts",
           "api", "cli")
FOUNDATION = {"errors", "redact", "schemas", "conventions", "calendars", "symbols", "config",
              "identity", "freshness", "palette", "ui", "errorlog", "api_token", "channels",
              "columns"}
APPLICATION = {"service", "health", "diagnosis"}
ENTRY = {"enrich", "enrich.__main__"}

# What each folder may import besides itself and the foundation. Read down the data flow:
# a provider answers requests (its request policy, retries and pacing, live in providers/);
# the checks judge what was fetched and what the store holds; the pipeline runs providers,
# checks and store; backfills drive the pipeline's fetch step; views read the store (and the
# heatmap a backfill fills) for the pages. quant is pure maths, below everything but the
# foundation.
MAY_IMPORT = {
    "quant": set(),
    "store": set(),
    "providers": {"quant"},
    "checks": {"store"},
    "pipeline": {"providers", "checks", "store", "quant"},
    "backfill": {"pipeline", "providers", "checks", "store", "quant"},
    # views.quality reads the coverage heatmap (backfill.heatmap) and the quality check
    # catalogue (checks.quality): read models over what those folders own, not a fetch.
    "views": {"backfill", "checks", "store", "quant"},
    # Alert rules read what the views and the runs say; incidents live in the catalog.
    "alerts": {"views", "backfill", "pipeline", "checks", "store", "quant"},
    # The JSON API translates HTTP to the services' and read models' calls, as the CLI does.
    "api": {"alerts", "views", "backfill", "pipeline", "providers", "checks", "store", "quant",
            "application"},
    "cli": {*FOLDERS, "application"},
}


def _place(module: str) -> str:
    """``foundation``, ``application``, ``entry`` or the folder a module of enrich sits in."""
    if module in ENTRY:
        return "entry"
    part = module.split(".")[1]
    if part in FOLDERS:
        return part
    return "foundation" if part in FOUNDATION else "application" if part in APPLICATION else "?"


def test_top_of_the_package_holds_only_the_named_modules():
    top = {p.stem for p in (ROOT / "enrich").glob("*.py")} - {"__init__", "__main__"}
    folders = {p.name for p in (ROOT / "enrich").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    assert top == FOUNDATION | APPLICATION, (
        f"new at the top of enrich/: {sorted(top - FOUNDATION - APPLICATION)} (give it a "
        f"folder, or name it here); gone: {sorted(FOUNDATION | APPLICATION - top)}")
    assert folders == set(FOLDERS)


def test_imports_run_down_the_data_flow(graph):
    wrong = []
    for e in graph:
        src, dst = _place(e.source), _place(e.target)
        if src == dst or dst == "foundation":
            continue
        if src == "foundation":
            ok = False  # the foundation imports only itself
        elif src in ("application", "entry"):
            ok = dst != "cli" or src == "entry"
        else:
            ok = dst in MAY_IMPORT[src]
        if not ok:
            wrong.append(f"{e.source} ({src}) -> {e.target} ({dst}) at {e.where}")
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)
