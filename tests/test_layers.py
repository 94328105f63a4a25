"""fem's import structure, read from the source with ``ast``: no cycle, and no import of a layer above.

The layers are those of the ``fem/__init__.py`` docstring. A module may import a module of its own group (its
package, or the module itself) or of a lower layer; groups that share a layer never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fem

PACKAGE = Path(fem.__file__).resolve().parent

# bottom first: each entry is one layer, a tuple of groups (a module or a package)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fem", "fem.errors"),
    ("fem.utils",),
    ("fem.validation", "fem.registry"),
    ("fem.configs", "fem.trl_configs"),
    ("fem.run_configs", "fem.metrics", "fem.calibration", "fem.sandbox", "fem.rundir"),
    ("fem.recipe", "fem.state"),
    ("fem.generation", "fem.tasks"),
    ("fem.proposals",),
    ("fem.drawing", "fem.readout", "fem.testing"),
    ("fem.models", "fem.estep", "fem.eval", "fem.mstep", "fem.report", "fem.tracking"),
    ("fem.runtime", "fem.preflight", "fem.export"),
    ("fem.loop",),
    ("fem.commands",),
    ("fem.cli",),
    ("fem.__main__",),
)
LAYER_OF = {group: level for level, groups in enumerate(LAYERS) for group in groups}
# pairs in different layers that must still stay apart (importer, imported)
APART = {("fem.proposals", "fem.tasks")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def group_of(module: str) -> str:
    if module == "fem":
        return module  # the package face; a new module of fem matches no shorter prefix than its own
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        if ".".join(parts[:n]) in LAYER_OF:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")


def imports_in(source: str, module: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    """The fem modules that ``module``'s source imports (``from fem import metrics`` counts as ``fem.metrics``)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(known)
            found |= submodules if len(submodules) == len(node.names) else submodules | {base}
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: imports_in(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
        for name, path in known.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_has_a_layer():
    for name in modules():
        group_of(name)


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_runs_up_or_sideways():
    wrong = []
    for module, targets in import_graph().items():
        here = group_of(module)
        for target in sorted(targets):
            there = group_of(target)
            if there == here:
                continue
            if LAYER_OF[there] >= LAYER_OF[here] or (here, there) in APART:
                wrong.append(f"{module} (layer {LAYER_OF[here]}) imports {target} (layer {LAYER_OF[there]})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_tasks_never_drive_the_model():
    """Tasks declare their cue, options and stop; reading an answer through the model is fem.readout's business."""
    banned = ("fem.generation", "fem.proposals", "fem.estep", "fem.loop", "fem.drawing", "fem.readout")
    graph = import_graph()
    wrong = [(m, t) for m in graph if group_of(m) == "fem.tasks" for t in graph[m] if t.startswith(banned)]
    assert not wrong, wrong


def test_checker_sees_cycles_and_upward_imports():
    """The checks above can fail: a planted cycle is found, and so are the imports of a task module that reaches
    up to the loop (absolute, relative and ``from fem import module`` forms)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = "from fem.loop import EMRunner\nfrom .base import Task\nfrom fem import metrics as M\n"
    found = imports_in(source, "fem.tasks.planted", False, modules())
    assert found == {"fem.loop", "fem.tasks.base", "fem.metrics"}
    assert LAYER_OF[group_of("fem.loop")] > LAYER_OF[group_of("fem.tasks.planted")]


def deferred_imports(source: str) -> list[int]:
    """Line numbers of import statements inside a function or class body."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            lines += [sub.lineno for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))]
    return sorted(set(lines))


# modules allowed to defer an import, each with its reason
DEFERRED_OK = {
    "fem.cli": "dispatch only: `fem --help` loads no torch",
    "fem.sandbox.bootstrap": "a script run by the jailed interpreter: ctypes is loaded for prctl, then unloaded",
}


def test_only_the_cli_imports_lazily():
    """Library modules import at the top; ``fem.cli`` alone defers (so ``fem --help`` loads no torch), plus the
    justified exceptions of ``DEFERRED_OK``."""
    assert deferred_imports("def f():\n    import os\n") == [2]
    wrong = {
        name: lines
        for name, path in modules().items()
        if name not in DEFERRED_OK and (lines := deferred_imports(path.read_text(encoding="utf-8")))
    }
    assert not wrong, wrong
    assert deferred_imports((PACKAGE / "cli.py").read_text(encoding="utf-8"))  # the CLI does defer


def test_proposals_know_only_the_backend_contract():
    """Proposals drive any backend through fem.generation.base / sampling, never the concrete hf backend."""
    graph = import_graph()
    wrong = [(m, t) for m in graph if group_of(m) == "fem.proposals" for t in graph[m] if t == "fem.generation.hf"]
    assert not wrong, wrong
