"""The library's layering: the method packages (the paper's math and the models) import no data I/O, no
Ray and no tracking, directly or through another project module, so they can be read, tested and reused
without a cluster or a dataset."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_dvc_deps import module_file

ROOT = Path(__file__).resolve().parents[1]
METHOD_PACKAGES = ("losses", "pseudo_labels", "models")
# Imports a method module must not reach (module name prefixes).
FORBIDDEN = ("ray", "mlflow", "pyarrow", "dvc", "pipeline.data", "pipeline.distributed", "pipeline.tracking",
             "pipeline.training", "pipeline.evaluation", "stages")  # fmt: skip


def forbidden(module: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in FORBIDDEN)


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def reachable_imports(path: Path) -> set[str]:
    """Every module name imported by `path` or by the project modules it imports, transitively."""
    seen, pending, names = set(), [path], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports_of(current):
            names.add(name)
            found = module_file(name) if name.split(".")[0] == "pipeline" else None
            if found is not None:
                pending.append(found)
    return names


@pytest.mark.parametrize("package", METHOD_PACKAGES)
def test_method_packages_import_no_io_ray_or_tracking(package):
    offending = {
        str(path.relative_to(ROOT)): sorted(name for name in reachable_imports(path) if forbidden(name))
        for path in sorted((ROOT / "pipeline" / package).glob("*.py"))
    }  # fmt: skip
    offending = {path: names for path, names in offending.items() if names}
    assert not offending, f"method modules reaching I/O, Ray or tracking: {offending}"


def test_the_rule_sees_a_violation(tmp_path):
    """The check itself can fail: a module importing the data package is caught through a second module."""
    (tmp_path / "a.py").write_text("import pipeline.predict\n")
    assert any(forbidden(name) for name in reachable_imports(tmp_path / "a.py"))
