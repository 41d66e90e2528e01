"""Generate the Python protobuf/gRPC modules of ``proto/`` into ``service/pb/`` (committed).

Usage: ``python proto/gen.py [--out DIR]`` (default ``service/pb``). ``tests/service/test_proto_gen.py`` re-runs it
into a temporary directory and diffs the result against the committed files, so edit the ``.proto`` and re-run
this script rather than editing generated code.

protoc writes ``from yoloxpai.v1 import detection_pb2`` into the ``_grpc`` module, which would resolve to the
``yoloxpai`` CLI package: the imports are rewritten to ``service.pb.yoloxpai.v1``. The package path inside the
descriptor (``yoloxpai/v1/detection.proto``, package ``yoloxpai.v1``) is unchanged, so reflection and other
languages see the canonical names.

The ``inference`` protos (our subset of Triton's, same message names) register in a private descriptor pool
(``service/pb/inference/_pool.py``, written here): Triton's own generated code (``tritonclient``, KServe, ...)
registers the same ``inference.*`` names in protobuf's default pool, which refuses a second definition of a name,
and the server must load in one process with such a client (tests, applications embedding both).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
PROTOS = ["yoloxpai/v1/detection.proto", "inference/model_config.proto", "inference/grpc_service.proto"]
PY_PACKAGE = "service.pb"
PRIVATE_POOL_PACKAGES = ("inference",)  # proto packages whose modules use their own descriptor pool
_POOL_MODULE = '''"""Private descriptor pool of the `{package}` protos (written by proto/gen.py; see its docstring).

Other generated code (tritonclient's Triton protos) registers the same message names in protobuf's default pool,
which refuses duplicates: our modules add their files here instead, so both load in one process.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
'''
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("


def generate(out: Path) -> list[Path]:
    """Run protoc for every proto into ``out``; returns the files written."""
    from grpc_tools import protoc  # dev dependency (grpcio-tools), not needed at run time

    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"  # well-known types
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(PROTO_ROOT / p) for p in PROTOS],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for proto in PROTOS:
        stem = Path(proto).with_suffix("")
        package_dir = out / stem.parent
        # Packages for every directory level, so the modules import as service.pb.yoloxpai.v1.*.
        for directory in [out, *[out / p for p in reversed(stem.parent.parents) if str(p) != "."], package_dir]:
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text("")
            written.append(init)
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            path = package_dir / f"{stem.name}{suffix}"
            text = path.read_text()
            module = ".".join(stem.parent.parts)
            text = re.sub(rf"^from {re.escape(module)} import", f"from {PY_PACKAGE}.{module} import", text, flags=re.M)
            if module in PRIVATE_POOL_PACKAGES and suffix == "_pb2.py":
                text = _use_private_pool(text, module)
            path.write_text(text)
            written.append(path)
        if module in PRIVATE_POOL_PACKAGES:
            pool = package_dir / "_pool.py"
            pool.write_text(_POOL_MODULE.format(package=module))
            written.append(pool)
    return sorted(set(written))


def _use_private_pool(text: str, module: str) -> str:
    """Point a generated ``_pb2`` module at its package's private pool instead of the default one."""
    if text.count(_DEFAULT_POOL) != 1:
        raise SystemExit(f"unexpected protoc output for {module}: the descriptor pool line changed")
    text = text.replace(_DEFAULT_POOL, "DESCRIPTOR = _pool.POOL.AddSerializedFile(")
    anchor = "from google.protobuf import descriptor_pool as _descriptor_pool\n"
    return text.replace(anchor, f"{anchor}from {PY_PACKAGE}.{module} import _pool\n", 1)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "service" / "pb", help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out.parent) if args.out.parent in path.parents else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
