"""The package's imports only go down: no circle, no upward import, and a device side that
imports nothing from the rest of edgexray (read from the source with ast, lazy imports
included, so nothing needs to be installed or run)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgexray"

# The host's floors, lowest first: a module imports from its own floor or lower ones.
HOST_FLOORS = (
    ("edgexray.errors", "edgexray.formatting", "edgexray.chatter", "edgexray.edge_runtime"),
    ("edgexray.compat",),
    ("edgexray.artifacts",),
    ("edgexray.pipeline",),
    ("edgexray.export",),
    ("edgexray.benchmarks", "edgexray.report"),
    ("edgexray.run",),
    ("edgexray.cli",),
)
# The device side's floors (edgexray/edge_runtime, docs/architecture.md).
EDGE = "edgexray.edge_runtime"
EDGE_FLOORS = (
    ("errors", "options", "scope", "metadata"),
    ("readers",),
    ("preprocess",),
    ("interpreter", "sidecar"),
    ("classifier",),
    ("explain",),
    ("outputs",),
    ("batch", "node"),
    ("cli", "infer", "check"),
)
# All a device may import beside the standard library (tensorflow: the interpreter's last
# fallback, when neither LiteRT nor tflite-runtime is installed).
DEVICE_LIBRARIES = {
    "numpy",
    "PIL",
    "pydicom",
    "pynetdicom",
    "highdicom",
    "ai_edge_litert",
    "tflite_runtime",
    "tensorflow",
    "edge_runtime",  # check.py runs in a bundle, where the package has this name
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known=()) -> set[str]:
    """Every module name path imports, at any depth of its code, relative ones resolved;
    `from package import name` is the module package.name when known holds it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                member = f"{base}.{alias.name}"
                found.add(member if member in known else base)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {other for other in imports(name, path, known) if other in known and other != name}
        for name, path in known.items()
    }


def floor(name: str, floors, prefix: str = "") -> int | None:
    if name == "edgexray":  # the package's face: its version, nothing else
        return 0
    for number, members in enumerate(floors):
        for member in members:
            full = f"{prefix}{member}"
            if name == full or name.startswith(full + "."):
                return number
    return None


def test_no_module_imports_one_that_imports_it_back():
    edges = graph()
    circles = []
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert circles == []


def test_host_imports_only_go_down():
    upward = [
        (name, other)
        for name, others in graph().items()
        if not name.startswith(EDGE + ".") and name != EDGE
        for other in others
        if floor(other, HOST_FLOORS) > floor(name, HOST_FLOORS)
    ]
    assert upward == []


def test_edge_runtime_imports_only_go_down_and_nothing_else_of_edgexray():
    upward, outside = [], []
    for name, others in graph().items():
        if not name.startswith(EDGE + "."):
            continue
        mine = floor(name, EDGE_FLOORS, f"{EDGE}.")
        for other in others:
            if not other.startswith(EDGE):
                outside.append((name, other))
            elif other != EDGE and floor(other, EDGE_FLOORS, f"{EDGE}.") > mine:
                upward.append((name, other))
    assert (upward, outside) == ([], [])


def test_every_edge_runtime_module_has_a_floor():
    missing = [
        name
        for name in modules()
        if name.startswith(EDGE + ".") and floor(name, EDGE_FLOORS, f"{EDGE}.") is None
    ]
    assert missing == []


def test_the_device_needs_only_numpy_pillow_litert_and_the_dicom_libraries():
    foreign = set()
    for name, path in modules().items():
        if name == EDGE or name.startswith(EDGE + "."):
            for other in imports(name, path):
                top = other.split(".")[0]
                if top not in sys.stdlib_module_names and top not in DEVICE_LIBRARIES | {
                    "edgexray"
                }:
                    foreign.add((name, other))
    assert foreign == set()


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    # A checker that finds nothing must be able to find something.
    fake = tmp_path / "edgexray"
    (fake / "pipeline").mkdir(parents=True)
    (fake / "cli").mkdir()
    (fake / "pipeline" / "train.py").write_text("def f():\n    from edgexray.cli import app\n")
    (fake / "cli" / "__init__.py").write_text("from edgexray.pipeline import train\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    edges = graph()
    assert edges["edgexray.pipeline.train"] == {"edgexray.cli"}
    assert "edgexray.pipeline.train" in edges["edgexray.cli"]
    assert floor("edgexray.cli", HOST_FLOORS) > floor("edgexray.pipeline.train", HOST_FLOORS)
