"""The request path's layering, read from the import statements: front ends reach the engine through the shared
cores and cross-cutting modules and never import each other; calls below the engine go one way."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"

# Transport entry points: each may import cores and cross-cutting modules, never another entry point.
FRONT_ENDS = {"service.rest", "service.router", "service.grpc_server", "service.oip.rest", "service.oip.grpc_service"}
# The /v1 request path (HTTP): the FastAPI routes and their framework-free core.
V1 = {"service.rest", "service.rest_detect", "service.rest_body", "service.rest_json"}
# Below the engine interface, in call order: nothing here may import a module to its left.
ENGINE_LAYERS = [
    "service.batched_engine",
    "service.model_control",
    "service.model_registry",
    "service.model_loading",
    "service.model_unit",
    "service.batch_exec",
]


def service_imports() -> dict[str, set[str]]:
    """``{module: the service modules it imports}`` for every module of the service package."""
    graph = {}
    for path in SERVICE.rglob("*.py"):
        if "pb" in path.relative_to(SERVICE).parts:
            continue
        module = ".".join(("service", *path.relative_to(SERVICE).with_suffix("").parts)).removesuffix(".__init__")
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
        graph[module] = {n for n in names if n.split(".")[0] == "service"}
    return graph


def test_the_graph_is_read() -> None:
    graph = service_imports()
    assert FRONT_ENDS | V1 | set(ENGINE_LAYERS) <= set(graph)
    assert "service.rest_detect" in graph["service.router"]  # the reader sees real edges


def test_front_ends_never_import_each_other() -> None:
    graph = service_imports()
    for module in FRONT_ENDS:
        others = FRONT_ENDS - {module}
        assert not graph[module] & others, f"{module} imports {graph[module] & others}"


def test_v1_does_not_import_the_open_inference_protocol() -> None:
    graph = service_imports()
    for module in V1:
        assert not {n for n in graph[module] if n.startswith("service.oip")}, module


def test_calls_below_the_engine_go_one_way() -> None:
    graph = service_imports()
    for i, module in enumerate(ENGINE_LAYERS):
        above = set(ENGINE_LAYERS[:i]) | FRONT_ENDS
        assert not graph[module] & above, f"{module} imports {graph[module] & above}"
    # The interface knows nothing of its implementation, and front ends know only the interface.
    assert not graph["service.engine"] & set(ENGINE_LAYERS)
    for module in FRONT_ENDS | V1 | {"service.oip.rest_infer", "service.accounting"}:
        assert not graph[module] & set(ENGINE_LAYERS), module


def test_no_service_module_is_over_350_lines() -> None:
    long = {
        p.name: n for p in SERVICE.rglob("*.py") if "pb" not in p.parts and (n := len(p.read_text().splitlines())) > 350
    }
    assert long == {}
