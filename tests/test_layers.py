"""The package reads as its pipeline and its imports go one way (README, "How the code is laid out").

Every import of every module of the package is read with ``ast`` (those inside functions too) and checked against
the layer order; an import of a scanforge module inside a function (the usual way to hide a cycle) fails, and so
does any cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import scanforge

PACKAGE = Path(scanforge.__file__).parent

#: The layers, bottom first: a module may import modules of its own layer and of the layers before it.
LAYERS = ("foundation", "kernels", "backends", "ops", "testing", "tuning", "cli")
#: The layer of each top-level module or subpackage of scanforge.
LAYER_OF = {"paths": "foundation", "_version": "foundation", "kernels": "kernels", "backends": "backends",
            "ops": "ops", "decode": "ops", "ssd": "ops", "testing": "testing", "tuning": "tuning", "cli": "cli"}
#: Users of the public ops: they may import the public API and each other, nothing of the pipeline's inside.
USERS = {"nn", "experiments", "compat", "integrations", "data"}
#: The public API as modules: the package (its ops), the ops modules, the backend registry (``register``,
#: ``Backend``, names), the spec types and the float64 reference (mamba-ssm's ``selective_scan_ref``).
PUBLIC = {"scanforge", "scanforge.ops", "scanforge.decode", "scanforge.ssd", "scanforge.backends",
          "scanforge.kernels.ir", "scanforge.kernels.reference"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _unit(module: str) -> str:
    """``root`` for the package itself, else its top-level module or subpackage (``kernels``, ``ops``, ...)."""
    parts = module.split(".")
    return "root" if len(parts) == 1 else parts[1]


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported scanforge module, line, inside a function)`` for every import in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in MODULES else target, child.lineno, in_function))
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return [(m, line, f) for m, line, f in found if m == "scanforge" or m.startswith("scanforge.")]


def _violation(module: str, target: str) -> str | None:
    """Why ``module`` may not import ``target``, or None."""
    unit, target_unit = _unit(module), _unit(target)
    if unit == "root":
        return None  # the package assembles the public ops and installs the tuning layer's config rule
    if unit in USERS:
        if target in PUBLIC or target_unit in USERS:
            return None
        return "a user of the public ops imports the inside of the pipeline"
    if unit not in LAYER_OF:
        return f"scanforge.{unit} belongs to no layer: add it to LAYER_OF or USERS (and the README)"
    if target_unit == "root" or target_unit in USERS:
        return None if unit == "cli" else "only the CLI and the users of the ops import the package or its users"
    if target_unit not in LAYER_OF:
        return f"scanforge.{target_unit} belongs to no layer"
    if LAYERS.index(LAYER_OF[target_unit]) > LAYERS.index(LAYER_OF[unit]):
        return f"layer {LAYER_OF[unit]} imports layer {LAYER_OF[target_unit]}, which is above it"
    return None


def test_the_layers_are_the_packages_folders():
    units = {_unit(m) for m in MODULES} - {"root"}
    assert units == set(LAYER_OF) | USERS


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_one_way(module):
    bad = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: imports {target}: {why}"
           for target, line, _ in _imports(module) if (why := _violation(module, target))]
    assert not bad, "\n".join(bad)


def test_no_scanforge_import_inside_a_function():
    """A function-level import of a scanforge module is how a cycle hides; third-party ones (heavy or optional
    dependencies) are allowed."""
    bad = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line}: {target}"
           for m in MODULES for target, line, in_function in _imports(m) if in_function]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (cycle := walk(t)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = walk(m)
            assert cycle is None, " -> ".join(cycle)


def test_the_checker_sees_a_violation():
    """The rules bite: an upward import, a user reaching inside, an unknown folder."""
    assert _violation("scanforge.backends.triton", "scanforge.tuning.configs")
    assert _violation("scanforge.tuning.cache", "scanforge.cli.parser")
    assert _violation("scanforge.kernels.codegen", "scanforge.backends")
    assert _violation("scanforge.testing.laws", "scanforge.tuning.cache")
    assert _violation("scanforge.nn.mamba", "scanforge.tuning.cache")
    assert _violation("scanforge.ops", "scanforge")
    assert _violation("scanforge.newthing", "scanforge.ops")
    assert _violation("scanforge.tuning.trials", "scanforge.testing.accuracy") is None
    assert _violation("scanforge.integrations.transformers", "scanforge.backends") is None


# ---------------------------------------------------------------------------------------------- one job per module

#: Lines a module may have: a longer one does several jobs (DESIGN.md, "Conventions"). The experiments are
#: end-to-end scripts, outside the rule.
MAX_LINES = 300
#: Modules allowed past :data:`MAX_LINES`, each with the ceiling it may not pass and why it is not split yet.
LONG_MODULES: dict[str, int] = {}


def _lines(module: str) -> int:
    return len(MODULES[module].read_text().splitlines())


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) != "experiments"))
def test_a_module_does_one_job(module):
    limit = LONG_MODULES.get(module, MAX_LINES)
    assert _lines(module) <= limit, (
        f"{MODULES[module].relative_to(PACKAGE.parent)} has {_lines(module)} lines (at most {limit}): split it by job")


def test_the_long_modules_are_still_long():
    """An exception that is no longer needed is removed, so the list stays the truth."""
    assert all(_lines(m) > MAX_LINES for m in LONG_MODULES), {m: _lines(m) for m in LONG_MODULES}


# ---------------------------------------------------------------------------------------------- private names

#: ``(module, private name it may reach into another module for)``, each with why. None today.
PRIVATE_REACH: set[tuple[str, str]] = set()


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_reaches(module: str) -> list[tuple[str, int, str]]:
    """``(other module, line, private name)`` for each ``from other import _name`` and each ``other._name``
    (``other`` a scanforge module bound by an import) in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    bound: dict[str, str] = {}  # local name -> the scanforge module it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "scanforge" and not target.startswith("scanforge."):
                continue
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    bound[alias.asname or alias.name] = f"{target}.{alias.name}"
                elif _private(alias.name):
                    found.append((target, node.lineno, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "scanforge" or alias.name.startswith("scanforge."):
                    bound[alias.asname or "scanforge"] = alias.name if alias.asname else "scanforge"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and (owner := _dotted(node.value)):
            head, _, rest = owner.partition(".")
            if head in bound:
                target = ".".join(filter(None, (bound[head], rest)))
                if target in MODULES and target != module:
                    found.append((target, node.lineno, node.attr))
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_reach_into_another_modules_private_names(module):
    bad = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {target}.{name}"
           for target, line, name in _private_reaches(module) if (module, name) not in PRIVATE_REACH]
    assert not bad, "a private name is its module's own business: make it public or move the code\n" + "\n".join(bad)


def test_the_private_name_checker_sees_a_reach(tmp_path, monkeypatch):
    """Both forms are found: ``from x import _name`` and ``x._name`` on an imported scanforge module."""
    source = tmp_path / "probe.py"
    source.write_text("from scanforge.tuning import aot\nfrom scanforge.backends.numba_cuda import _launch\n"
                      "import scanforge.kernels.codegen as cg\n\naot._compile_numba\ncg._load\nx = object()\nx._y\n")
    monkeypatch.setitem(MODULES, "scanforge.probe", source)
    assert sorted(_private_reaches("scanforge.probe")) == [
        ("scanforge.backends.numba_cuda", 2, "_launch"), ("scanforge.kernels.codegen", 6, "_load"),
        ("scanforge.tuning.aot", 5, "_compile_numba")]
