"""``model/`` never imports ``service/`` (or the CLI dispatcher): it is the library the service depends on."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_model_never_imports_service() -> None:
    files = list((REPO / "model").rglob("*.py"))
    assert len(files) > 30
    offenders = [str(p.relative_to(REPO)) for p in files if "service" in imported_roots(p)]
    assert offenders == []


def test_bundle_runtime_modules_import_no_torch_at_module_level() -> None:
    # The serving image has no torch: these modules must only import it lazily (inside functions).
    for name in ("artifacts.py", "predictor.py", "letterbox.py", "config.py", "runtime/__init__.py"):
        tree = ast.parse((REPO / "model" / name).read_text())
        top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        roots = {a.name.split(".")[0] for n in top_level if isinstance(n, ast.Import) for a in n.names}
        roots |= {n.module.split(".")[0] for n in top_level if isinstance(n, ast.ImportFrom) and n.module}
        assert "torch" not in roots, name
