"""dvc.yaml lists, for every stage, each project module its entry point imports (directly or not), so a
code change reruns exactly the stages that run that code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


def module_file(name: str) -> Path | None:
    """pipeline.a.b → pipeline/a/b.py or pipeline/a/b/__init__.py (None for third-party modules)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the project modules `path` imports (packages include their __init__)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            if module_file(".".join(parts[:depth])) is not None:
                found.add(".".join(parts[:depth]))
    return found


def import_closure(module: str) -> set[Path]:
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending.extend(imported_modules(module_file(name)) - seen)
    return {module_file(name).relative_to(ROOT) for name in seen}


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(stages()))
def test_stage_deps_cover_every_imported_module(stage):
    definition = stages()[stage]
    module = definition["cmd"].split()[2]  # python -m stages.<name> …
    deps = [Path(dep) for dep in definition["deps"]]
    missing = [
        str(path)
        for path in sorted(import_closure(module))
        if path.name != "__init__.py" or path.stat().st_size
        if not any(path == dep or dep in path.parents for dep in deps)
    ]
    assert not missing, f"dvc.yaml stage {stage!r} runs code it does not depend on: {missing}"


@pytest.mark.parametrize("stage", sorted(stages()))
def test_stage_deps_hold_no_code_the_stage_does_not_run(stage):
    """The other direction: editing code a stage never imports (a plot, the sweep, the local MLflow
    server) must not rerun it. Every code dep is a module it imports, every code folder one it imports
    wholly."""
    definition = stages()[stage]
    closure = import_closure(definition["cmd"].split()[2])
    unused = []
    for dep in map(Path, definition["deps"]):
        if dep.parts[0] not in PACKAGES:
            continue
        if (ROOT / dep).is_dir():
            modules = sorted(path.relative_to(ROOT) for path in (ROOT / dep).rglob("*.py"))
            unused += [str(path) for path in modules if path not in closure
                       and (path.name != "__init__.py" or (ROOT / path).stat().st_size)]  # fmt: skip
        elif dep not in closure:
            unused.append(str(dep))
    assert not unused, f"dvc.yaml stage {stage!r} depends on code it does not run: {unused}"
