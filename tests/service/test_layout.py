"""Layering and generated code: service imports only the bundle API from model (and the torch-free reduced JPEG
decode it shares with the Predictor) and never torch; the committed protobuf modules are exactly what proto/gen.py
produces."""

from __future__ import annotations

import ast
import filecmp
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_service_imports_only_the_bundle_api_and_never_torch():
    for path in (REPO / "service").rglob("*.py"):
        for name in _imports(path):
            root = name.split(".")[0]
            assert root != "torch", f"{path} imports torch"
            if root == "model":
                assert name in ("model.artifacts", "model.predictor", "model.image_decode"), f"{path} imports {name}"


def test_generated_protobuf_code_is_up_to_date(tmp_path):
    subprocess.run([sys.executable, str(REPO / "proto" / "gen.py"), "--out", str(tmp_path / "pb")], check=True)
    committed = REPO / "service" / "pb"
    generated = sorted(p.relative_to(tmp_path / "pb") for p in (tmp_path / "pb").rglob("*") if p.is_file())
    assert generated == sorted(
        p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    for rel in generated:
        assert filecmp.cmp(tmp_path / "pb" / rel, committed / rel, shallow=False), f"{rel} is stale: run proto/gen.py"


def test_serving_imports_no_torch():
    code = (
        "import importlib.util, sys, service.server, service.cli, yoloxpai.client\n"
        "if importlib.util.find_spec('model.predictor'): import model.predictor, model.artifacts\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
