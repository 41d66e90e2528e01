"""``model/`` never imports ``service/`` or ``yoloxpai/`` (the CLI dispatcher and the client): it is the library
they depend on. The client (``yoloxpai/client``) takes only the protobuf stubs from ``service`` and only the
shared drawing from ``model``."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imported_roots(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


def test_model_never_imports_service_or_yoloxpai() -> None:
    files = list((REPO / "model").rglob("*.py"))
    assert len(files) > 30
    offenders = [str(p.relative_to(REPO)) for p in files if imported_roots(p) & {"service", "yoloxpai"}]
    assert offenders == []


def test_client_imports_only_the_stubs_from_service_and_the_drawing_from_model() -> None:
    files = list((REPO / "yoloxpai" / "client").rglob("*.py"))
    assert len(files) >= 5
    for path in files:
        for name in imported_modules(path):
            root = name.split(".")[0]
            if root == "service":
                assert name.startswith("service.pb."), f"{path} imports {name}"
            if root == "model":
                assert name == "model.drawing", f"{path} imports {name}"


def test_bundle_runtime_modules_import_no_torch_at_module_level() -> None:
    # The serving image has no torch: these modules must only import it lazily (inside functions).
    for name in ("artifacts.py", "predictor.py", "letterbox.py", "config.py", "runtime/__init__.py"):
        tree = ast.parse((REPO / "model" / name).read_text())
        top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        roots = {a.name.split(".")[0] for n in top_level if isinstance(n, ast.Import) for a in n.names}
        roots |= {n.module.split(".")[0] for n in top_level if isinstance(n, ast.ImportFrom) and n.module}
        assert "torch" not in roots, name
