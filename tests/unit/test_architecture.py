"""The package's import graph: acyclic module by module, and subpackages import only downward.

grimp reads every import statement, including those inside functions, so a cycle cannot hide
behind a late import; the layer list below is the picture in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

import harness

# Top to bottom; a subpackage may import those on lower lines, never higher ones.
# Names on one line are independent of each other.
LAYERS: list[set[str]] = [
    {"cli"},
    {"commands"},
    {"audit"},
    {"report", "workers", "bench"},
    {"tuning", "queue"},
    {"store", "training"},
    {"experiment"},
    {"models", "datasets"},
    {"faults"},
    {"errors"},
]
LEVEL = {name: depth for depth, names in enumerate(LAYERS) for name in names}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("harness")


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else "harness"


def test_every_subpackage_has_a_layer(graph: grimp.ImportGraph) -> None:
    parts = {_part(m) for m in graph.modules} - {"harness", "paperdata"}
    assert parts <= set(LEVEL), f"add {sorted(parts - set(LEVEL))} to LAYERS and the doc picture"


def test_subpackages_import_only_downward(graph: grimp.ImportGraph) -> None:
    upward = []
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = _part(module), _part(imported)
            if "harness" in (a, b) or a == b:
                continue  # harness/__init__ holds only __version__
            if LEVEL[b] <= LEVEL[a]:
                upward.append(f"{module} -> {imported}")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_module_graph_has_no_cycle(graph: grimp.ImportGraph) -> None:
    # Iterative DFS with colours; any back edge is a cycle, reported as its path.
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph.modules, white)
    for root in sorted(graph.modules):
        if colour[root] != white:
            continue
        stack = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        path = [root]
        colour[root] = grey
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = black
                stack.pop()
                path.pop()
            elif colour[child] == grey:
                cycle = path[path.index(child):] + [child]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            elif colour[child] == white:
                colour[child] = grey
                path.append(child)
                stack.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))


def test_the_checks_can_fail() -> None:
    # The cycle detector itself, on a graph built by hand with one cycle.
    g = grimp.ImportGraph()
    for name in ("p.a", "p.b", "p.c"):
        g.add_module(name)
    g.add_import(importer="p.a", imported="p.b")
    g.add_import(importer="p.b", imported="p.c")
    g.add_import(importer="p.c", imported="p.a")
    with pytest.raises(pytest.fail.Exception, match="import cycle: p.a -> p.b -> p.c -> p.a"):
        test_module_graph_has_no_cycle(g)


PACKAGE_ROOT = Path(harness.__file__).parent


def _is_module(package: str, name: str) -> bool:
    base = PACKAGE_ROOT.joinpath(*package.split(".")[1:], name)
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def private_names_used_across_modules(source: str, package: str) -> list[str]:
    """`_name`s a module takes from another harness module, by import or module attribute.

    A private module (``_core.py``) may be imported by its package; a private name may not."""
    found = []
    modules: set[str] = set()  # names bound to harness modules in this file
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("harness"):
                continue
            for alias in node.names:
                name = alias.name
                if _is_module(node.module, name):
                    modules.add(alias.asname or name)
                elif name.startswith("_") and not name.startswith("__"):
                    found.append(f"from {node.module} import {name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("harness") and alias.asname:
                    modules.add(alias.asname)
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_no_private_name_used_outside_its_module() -> None:
    offences = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        package = ".".join(("harness", *path.relative_to(PACKAGE_ROOT).parent.parts))
        for use in private_names_used_across_modules(path.read_text(), package):
            offences.append(f"{path.relative_to(PACKAGE_ROOT.parent)}: {use}")
    assert not offences, "private names used across modules:\n" + "\n".join(offences)


def test_the_private_name_check_can_fail() -> None:
    source = (
        "from harness.queue.jobs import _take, claim\n"
        "from harness.datasets import _core\n"
        "from harness.queue import jobs\n"
        "jobs._claimed(1)\n_core.load()\n"
    )
    assert private_names_used_across_modules(source, "harness.queue") == [
        "from harness.queue.jobs import _take",
        "jobs._claimed",
    ]


def test_the_report_and_the_model_registry_load_without_torch() -> None:
    """torch is 1.3 s of imports and ~500 MiB resident: the report only needs model labels, so
    building one (and `harness --help`) must not load it; building a model still does."""
    import subprocess
    import sys

    code = (
        "import sys, harness.cli, harness.commands.report, harness.report.render, harness.models; "
        "print(sorted(m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules)); "
        "harness.models.build_model('resnet18', 3, 10); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"]
