"""Every mgc module imports on its own and in any order, and mgc's modules import one another
without a cycle (issue 37). The modules are found by walking the package, so a new one is covered."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mgc"

# Edges of the import graph, in-function imports included, allowed to close a cycle (none: a new
# one needs its reason here).
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()

# Third-party packages the driver imports once before it forks a child per module: a child then
# imports one mgc module and nothing else of mgc, at the cost of mgc's own code only.
PRELOAD = ("numpy", "scipy", "scipy.fft", "scipy.sparse", "pandas", "pyarrow", "pyarrow.parquet", "sklearn", "torch")


def modules() -> list[str]:
    """Every module of the mgc package, dotted, sorted."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def _path(module: str) -> Path:
    base = PACKAGE.parent.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def import_graph(in_functions: bool) -> dict[str, dict[str, int]]:
    """{module: {mgc module it imports: line}} from the source: its top-level imports (class bodies
    and module-level blocks included, `if TYPE_CHECKING:` left out), and those in functions with
    `in_functions`. Importing mgc.a.b runs package mgc.a first: that is an edge too, unless the
    importer is inside it."""
    known = set(modules())
    graph: dict[str, dict[str, int]] = {}
    for module in known:
        path = _path(module)
        own_package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = graph.setdefault(module, {})

        def visit(node: ast.AST, in_function: bool, module: str = module, own_package: str = own_package) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)) and (in_functions or not in_function):
                    if isinstance(child, ast.Import):
                        targets = [a.name for a in child.names]
                    else:
                        base = child.module or ""
                        if child.level:  # relative: from the importer's package up
                            up = own_package.split(".")[: len(own_package.split(".")) - child.level + 1]
                            base = ".".join(up + ([child.module] if child.module else []))
                        targets = [base] + [f"{base}.{a.name}" for a in child.names]
                    for target in targets:
                        while target and target not in known:
                            target = target.rpartition(".")[0]
                        while target:  # the module and each package above it, outside the importer's
                            if target != module and not module.startswith(target + "."):
                                edges.setdefault(target, child.lineno)
                            target = target.rpartition(".")[0]
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(ast.parse(path.read_text(), str(path)), False)
    return graph


def find_cycle(graph: dict[str, dict[str, int]], allowed: set[tuple[str, str]] = set()) -> list[str]:
    """A cycle of `graph` (its modules, the first repeated at the end) not using `allowed` edges;
    [] if there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if (node, nxt) in allowed:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (found := dfs(start)):
            return found
    return []


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(cycle) + " (" + ", ".join(f"{a}:{graph[a][b]}" for a, b in zip(cycle, cycle[1:])) + ")"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=600)


def test_the_top_level_imports_have_no_cycle():
    graph = import_graph(in_functions=False)
    cycle = find_cycle(graph)
    assert not cycle, f"mgc's top-level imports run in a cycle: {_describe(cycle, graph)}"


def test_no_cycle_hides_behind_imports_in_functions():
    graph = import_graph(in_functions=True)
    cycle = find_cycle(graph, KNOWN_CYCLE_EDGES)
    assert not cycle, f"mgc's imports, in functions included, run in a cycle: {_describe(cycle, graph)}"
    for a, b in KNOWN_CYCLE_EDGES:  # each allowance still needed: remove it once its cycle is gone
        assert b in graph[a] and find_cycle(graph, KNOWN_CYCLE_EDGES - {(a, b)}), f"{a} -> {b} closes no cycle now"


def test_every_module_imports_on_its_own():
    """`import mgc.X` with no other mgc module imported first, for every X: a driver process imports
    the heavy third-party packages once, then forks a child per module (a fresh process per module
    costs about 1.2 s each, most of it torch)."""
    driver = textwrap.dedent(f"""
        import importlib, os, sys, traceback
        for name in {PRELOAD!r}:
            importlib.import_module(name)
        assert not [m for m in sys.modules if m == "mgc" or m.startswith("mgc.")]
        failed = []
        for module in {modules()!r}:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(module)
                except BaseException:
                    traceback.print_exc()
                    sys.stderr.flush()
                    os._exit(1)
                os._exit(0)
            if os.waitpid(pid, 0)[1] != 0:
                failed.append(module)
        print("FAILED", *failed)
    """)
    done = _run(driver)
    assert done.returncode == 0 and done.stdout.strip() == "FAILED", done.stdout + done.stderr


def test_every_module_imports_in_reverse_and_in_a_shuffled_order():
    names = modules()
    shuffled = names[:]
    random.Random(37).shuffle(shuffled)
    for order in (names[::-1], shuffled):
        done = _run(f"import importlib\nfor m in {order!r}:\n    importlib.import_module(m)")
        assert done.returncode == 0, f"importing in the order {order}:\n{done.stderr}"
