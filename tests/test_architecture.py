"""The dependencies run one way: core ← components ← composition (an import-graph check).

- core: the modules of ``jobpulse/`` (contracts and shared infrastructure) import only core;
- components: ``producer/``, ``dataflows/``, ``dashboard/``, ``stack/``, ``postgres/`` import
  the core and themselves, never each other;
- composition: ``cli/`` (the command, ``breakdown``, ``demo``) may import anything.

Every import counts, including the ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ("producer", "dataflows", "dashboard", "stack", "postgres")
COMPOSITION = "cli"
#: folder → import package, as pyproject.toml maps them.
FOLDERS = {"jobpulse": "jobpulse", **{f: f"jobpulse.{f}" for f in (*COMPONENTS, COMPOSITION)}}


def _layer(module: str) -> str:
    """``core``, a component name or ``cli`` for a ``jobpulse…`` module name."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in (*COMPONENTS, COMPOSITION):
        return parts[1]
    return "core"


def _module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    stem = [] if path.stem == "__init__" else [path.stem]
    return ".".join([FOLDERS[folder], *stem])


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every jobpulse import in ``path``."""
    package = _module_name(path)
    if path.stem != "__init__":
        package = package.rpartition(".")[0]
    return _imports_in(path.read_text(), package)


def _imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every jobpulse import in ``source``, a module of ``package``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # ``from jobpulse import x`` imports the module jobpulse.x when there is one.
            names = [f"{module}.{alias.name}" for alias in node.names]
            found += [(node.lineno, name if _is_module(name) else module) for name in names]
    return [(line, m) for line, m in found if m == "jobpulse" or m.startswith("jobpulse.")]


def _is_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "jobpulse" or len(parts) < 2:
        return False
    folder = parts[1] if parts[1] in FOLDERS and len(parts) > 2 else "jobpulse"
    rest = parts[2:] if folder != "jobpulse" else parts[1:]
    base = ROOT / folder
    if folder != "jobpulse" and not rest:
        return True
    return (base / Path(*rest)).with_suffix(".py").exists() or (base / Path(*rest)).is_dir()


def _sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def _allowed(source: str, target: str) -> bool:
    if source == COMPOSITION:
        return True
    if source == "core":
        return target == "core"
    return target in ("core", source)


def test_every_import_points_down_or_sideways_within_a_component() -> None:
    wrong = []
    for path in _sources():
        name = _module_name(path)
        if name == "jobpulse.__main__":
            continue  # the ``python -m jobpulse`` entry point runs the composition
        source = _layer(name)
        for line, target in _imports(path):
            if not _allowed(source, _layer(target)):
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("core", "core", True),
        ("core", "dataflows", False),
        ("producer", "dataflows", False),
        ("dashboard", "stack", False),
        ("dataflows", "dataflows", True),
        ("dataflows", "core", True),
        ("cli", "dashboard", True),
    ],
)
def test_the_rule_itself(source: str, target: str, allowed: bool) -> None:
    assert _allowed(source, target) is allowed


def test_the_checker_sees_relative_lazy_and_from_package_imports() -> None:
    places = {m for _, m in _imports(ROOT / "producer" / "places.py")}
    assert "jobpulse.delta" in places
    # A component module importing three other components three ways: all found.
    source = (
        "def f():\n    from jobpulse.dataflows import geocoding\n"
        "from ..dashboard import app\nimport jobpulse.stack.lifecycle\n"
    )
    targets = {_layer(m) for _, m in _imports_in(source, "jobpulse.producer")}
    assert targets == {"dataflows", "dashboard", "stack"}
