"""The images and manifests agree: every server a deployment file starts can serve what the training that feeds it
publishes.

For each `yoloxpai serve` container (deploy/k8s overlays and kserve; compose's `serve`): the backend and devices it
forces (its env over its image's ENV over the Settings defaults) must be satisfiable by the formats the matching
`yoloxpai export` writes (deploy/k8s/train's Job; compose's `train`) with the runtimes its image installs (the
Dockerfile stage named by the image tag -> the extras its venv was installed with, per build-arg variant ->
pyproject's requirements). Backends, formats and `auto`'s preference order come from ``model.predictor``. Also: the
GPU image carries onnxruntime-gpu instead of the CPU wheel, and the TensorRT engine cache is on a shared persistent
volume wherever a server runs on CUDA.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
from dataclasses import dataclass

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ._manifests import (
    KUSTOMIZATIONS,
    REPO,
    compose_argv,
    container_argv,
    container_env,
    containers,
    dockerfile,
    dockerfile_stages,
    load_compose,
    mapping,
    one,
    pod_spec,
    render,
    stage_env,
    stage_instructions,
    yoloxpai_invocations,
)

predictor = pytest.importorskip("model.predictor", reason="model.predictor is not importable")
settings = pytest.importorskip("service.settings", reason="service.settings is not importable")
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
BACKEND_FORMATS, CPU_PREFERENCE, CUDA_PREFERENCE = (
    predictor.BACKEND_FORMATS,
    predictor.CPU_PREFERENCE,
    predictor.CUDA_PREFERENCE,
)

# The distributions that provide each backend, and where each build runs it. onnxruntime-gpu is the same
# `onnxruntime` module as the CPU wheel plus the CUDA provider; the CPU wheel cannot serve cuda devices.
RUNTIMES = {
    "onnxruntime": {("onnxruntime", "cpu")},
    "onnxruntime-gpu": {("onnxruntime", "cpu"), ("onnxruntime", "cuda")},
    "openvino": {("openvino", "cpu")},
    "torch": {("torchscript", "cpu"), ("torchscript", "cuda")},
    "tensorrt": {("tensorrt", "cuda")},
}
DEFAULT_EXPORT_FORMATS = {"onnx"}  # model/cli/export.py: no --format -> onnx
ENGINE_CACHE = "YOLOXPAI_ENGINE_CACHE"


# --- what an export writes ---------------------------------------------------------------------------------------


def export_formats(words: list[str]) -> set[str]:
    """The formats of one `yoloxpai export` command line, read with the command's own parser."""
    from model.cli import export

    parser = argparse.ArgumentParser(prog="yoloxpai export", exit_on_error=False)
    export.add_arguments(parser)
    args, _ = parser.parse_known_args(words)
    return set(args.formats or DEFAULT_EXPORT_FORMATS)  # `--format` extends one flat list


def published_formats(argvs: list[list[str]]) -> set[str]:
    """Formats of every bundle the given container command lines publish; fails when none exports."""
    exports = [words for argv in argvs for command, words in yoloxpai_invocations(argv) if command == "export"]
    assert exports, "no `yoloxpai export` found: the pairing check would pass vacuously"
    # Several exports: each version a server may load is one of them, so only what all of them write is certain.
    return set.intersection(*(export_formats(words) for words in exports))


# --- what an image installs --------------------------------------------------------------------------------------


def _stage_parent(stage: str) -> str | None:
    (from_args,) = [i.args for i in dockerfile() if i.keyword == "FROM" and i.stage == stage]
    parent = from_args.split()[0]
    return parent if parent in dockerfile_stages() else None


def venv_stages(stage: str) -> list[str]:
    """The stages whose RUNs built the venv ``stage`` runs: the one it copies /opt/venv from, and its ancestors."""
    sources = [
        flag.partition("=")[2]
        for copy in stage_instructions(stage, "COPY")
        if copy.split()[-1] == "/opt/venv"
        for flag in copy.split()
        if flag.startswith("--from=")
    ]
    assert len(sources) == 1, f"{stage}: expected one COPY --from=... /opt/venv, found {sources}"
    chain, current = [], sources[0]
    while current is not None:
        chain.append(current)
        current = _stage_parent(current)
    return chain


_EXTRAS = re.compile(r"\.\[([^\]]+)\]")


def image_extras(stage: str) -> dict[str, set[str]]:
    """The extras the image's venv is installed with, per build variant: ``{"default": {...}}`` for literal
    ``.[a,b]``, or one entry per branch (``"WITH_TENSORRT=1"``) where ``.[$var]`` is chosen by a
    ``case "$ARG" in value) var=a,b ;; ... esac`` on a build arg."""
    literal: set[str] = set()
    variants: dict[str, set[str]] = {}
    for build_stage in venv_stages(stage):
        for run in stage_instructions(build_stage, "RUN"):
            for spec in _EXTRAS.findall(run):
                if not spec.startswith("$"):
                    literal |= set(spec.split(","))
                    continue
                var = spec.strip("${}")
                case = re.search(r'case "\$(\w+)" in (.*?) esac', run)
                assert case, f"{build_stage}: .[{spec}] must be chosen by a `case` on a build arg"
                branches = re.findall(rf"(\w+)\)\s*{var}=([\w,]+)\s*;;", case[2])
                assert branches, f"{build_stage}: no `value) {var}=extras ;;` branch in the case on {case[1]}"
                variants.update({f"{case[1]}={value}": set(extras.split(",")) for value, extras in branches})
    assert literal or variants, f"{stage}: its venv is installed with no extras (nothing found to check)"
    return {name: literal | extras for name, extras in variants.items()} or {"default": literal}


@functools.cache
def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def distributions(extras: set[str]) -> set[str]:
    """Canonical names of the distributions ``.[extras]`` requires directly (self-references expanded)."""
    project = _pyproject()
    own = canonicalize_name(project["name"])
    names = {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in project["optional-dependencies"], f"the Dockerfile installs an unknown extra [{extra}]"
        for spec in project["optional-dependencies"][extra]:
            requirement = Requirement(spec)
            if canonicalize_name(requirement.name) == own:
                todo += requirement.extras
            else:
                names.add(canonicalize_name(requirement.name))
    return names


def runtimes(dists: set[str]) -> set[tuple[str, str]]:
    """(backend, device kind) pairs the distributions can run (tensorrt-cu13 counts as tensorrt)."""
    found: set[tuple[str, str]] = set()
    for dist in dists:
        found |= RUNTIMES.get(re.sub(r"-cu\d+$", "", dist), set())
    return found


def image_runtimes(stage: str) -> dict[str, set[tuple[str, str]]]:
    return {name: runtimes(distributions(extras)) for name, extras in image_extras(stage).items()}


# --- the check -------------------------------------------------------------------------------------------------


def unsatisfied(backend: str, devices: tuple[str, ...], formats: set[str], runs: set[tuple[str, str]]) -> list[str]:
    """Why a server with ``backend`` on ``devices`` cannot serve a bundle of ``formats`` with the runtimes ``runs``
    installed; empty when it can (``auto``: some backend of the device's preference list is installed for the
    device and has an artifact, as ``model.predictor.select_backend`` requires)."""
    problems = []
    for device in devices:
        kind = "cuda" if device.split(":")[0] == "cuda" else "cpu"
        if backend == "auto":
            preference = CUDA_PREFERENCE if kind == "cuda" else CPU_PREFERENCE
            usable = [b for b in preference if (b, kind) in runs and formats & set(BACKEND_FORMATS[b])]
            if not usable:
                installed = sorted(b for b, k in runs if k == kind)
                problems.append(
                    f"backend auto on {device}: no backend of {list(preference)} is both installed for {kind} "
                    f"(installed: {installed}) and given an artifact (the export writes {sorted(formats)})"
                )
            continue
        if not formats & set(BACKEND_FORMATS[backend]):
            problems.append(
                f'backend {backend}: the bundle has no artifact for it, "bundle has no artifact" at load (the export '
                f"writes {sorted(formats)}; {backend} runs {list(BACKEND_FORMATS[backend])})"
            )
        if (backend, kind) not in runs:
            problems.append(f"backend {backend} on {device}: the image installs no {backend} runtime for {kind}")
    return problems


def server_problems(env: dict[str, str], stage: str, formats: set[str]) -> list[str]:
    """Every reason a server container with ``env`` on image ``stage`` cannot serve bundles of ``formats``, for each
    build variant of the image."""
    fields = settings.Settings.model_fields
    effective = {**stage_env(stage), **env}
    backend = effective.get("YOLOXPAI_BACKEND", fields["backend"].default)
    device = effective.get("YOLOXPAI_DEVICE", fields["device"].default)
    devices = tuple(d.strip() for d in device.split(",") if d.strip())
    return [
        f"image {stage} ({variant}): {problem}"
        for variant, runs in image_runtimes(stage).items()
        for problem in unsatisfied(backend, devices, formats, runs)
    ]


# --- the deployment files ------------------------------------------------------------------------------------


def _image_stage(image: str) -> str:
    stage = image.rpartition(":")[2]
    assert stage in dockerfile_stages(), f"image {image}: its tag names no Dockerfile target"
    return stage


@dataclass(frozen=True)
class Server:
    """One `yoloxpai serve` container of a rendered kustomization."""

    kustomization: str
    workload: dict
    container: dict
    env: dict[str, str]  # the container's own (envFrom ConfigMaps, env), not the image's
    stage: str  # the Dockerfile target its image tag names

    @property
    def where(self) -> str:
        meta = self.workload["metadata"]
        return f"deploy/k8s/{self.kustomization} {self.workload['kind']}/{meta['name']}:{self.container['name']}"

    @property
    def device(self) -> str:
        return {**stage_env(self.stage), **self.env}.get("YOLOXPAI_DEVICE", "")


def k8s_servers() -> list[Server]:
    """Every `yoloxpai serve` container in the kustomizations."""
    found = []
    for kustomization in KUSTOMIZATIONS:
        docs = render(kustomization)
        for doc in docs:
            spec = pod_spec(doc)
            for container in containers(spec) if spec else []:
                if any(command == "serve" for command, _ in yoloxpai_invocations(container_argv(container))):
                    env = container_env(container, docs)
                    found.append(Server(kustomization, doc, container, env, _image_stage(container["image"])))
    return found


def k8s_training_formats() -> set[str]:
    """What deploy/k8s/train publishes into the models claim every server mounts."""
    job = one(render("train"), "Job")
    return published_formats([container_argv(c) for c in containers(pod_spec(job))])


def compose_pair() -> tuple[dict[str, str], str, set[str]]:
    """(env, image stage, formats) of compose's `serve` and the bundles its `train` profile publishes."""
    services = load_compose()["services"]
    serve = services["serve"]
    stage = serve.get("build", {}).get("target") or _image_stage(serve["image"])
    return mapping(serve.get("environment")), stage, published_formats([compose_argv(services["train"])])


SERVERS = k8s_servers()


def test_every_server_is_found() -> None:
    """Guard against a vacuous pass: both overlays and the KServe predictor are checked."""
    assert {"overlays/cpu", "overlays/gpu", "kserve"} <= {server.kustomization for server in SERVERS}
    assert {server.stage for server in SERVERS} == {"serve-cpu", "serve-gpu"}


@pytest.mark.parametrize("server", [pytest.param(s, id=s.where) for s in SERVERS])
def test_k8s_server_can_serve_what_the_training_job_publishes(server: Server) -> None:
    problems = server_problems(server.env, server.stage, k8s_training_formats())
    assert not problems, f"{server.where} cannot serve deploy/k8s/train's bundles:\n" + "\n".join(problems)


def test_compose_serve_can_serve_what_compose_train_publishes() -> None:
    env, stage, formats = compose_pair()
    problems = server_problems(env, stage, formats)
    assert not problems, "docker-compose.yml serve cannot serve its train profile's bundles:\n" + "\n".join(problems)


# --- the check catches what it is for ------------------------------------------------------------------------


def _script_formats(script: str) -> set[str]:
    return published_formats([["/bin/sh", "-c", script]])


def test_export_formats_are_read_like_the_cli() -> None:
    assert _script_formats("yoloxpai export --weights w.pt --out b") == {"onnx"}
    assert _script_formats("yoloxpai export --weights w.pt --out b --format onnx,tensorrt") == {"onnx", "tensorrt"}
    assert _script_formats("set -eu\nyoloxpai export --weights w --out b --format=openvino --format torchscript") == {
        "openvino",
        "torchscript",
    }
    with pytest.raises(AssertionError, match="no `yoloxpai export`"):
        _script_formats("yoloxpai train --data d")


def test_a_tensorrt_overlay_with_an_onnx_only_job_fails() -> None:
    """The issue's failure: the GPU overlay forcing tensorrt while the Job exports onnx ("bundle has no artifact",
    exit 2). Caught for every build of the GPU image, TensorRT included."""
    formats = _script_formats('yoloxpai export --weights "$RUN_DIR/best.pt" --repository /r --name m --format onnx')
    env = {"YOLOXPAI_BACKEND": "tensorrt", "YOLOXPAI_DEVICE": "cuda:0"}
    problems = server_problems(env, "serve-gpu", formats)
    variants = image_extras("serve-gpu")
    assert len(variants) >= 2 and all(any(f"({v})" in p for p in problems) for v in variants), problems
    assert any("bundle has no artifact" in p for p in problems), problems
    # The same pair with the Job exporting tensorrt too: the default image (no TensorRT) is still caught.
    problems = server_problems(env, "serve-gpu", formats | {"tensorrt"})
    assert problems and all("installs no tensorrt runtime" in p for p in problems), problems


def test_auto_on_cuda_with_the_cpu_image_fails() -> None:
    """A CUDA device on an image whose ONNX Runtime is the CPU wheel (it would fall back to the CPU, or fail)."""
    problems = server_problems({"YOLOXPAI_BACKEND": "auto", "YOLOXPAI_DEVICE": "cuda:0"}, "serve-cpu", {"onnx"})
    assert problems and "backend auto on cuda:0" in problems[0], problems
    assert not server_problems({"YOLOXPAI_BACKEND": "auto", "YOLOXPAI_DEVICE": "cuda:0"}, "serve-gpu", {"onnx"})


def test_runtime_table_covers_every_backend() -> None:
    """A backend added to model.predictor must say here which distribution brings it."""
    assert {backend for runs in RUNTIMES.values() for backend, _ in runs} == set(BACKEND_FORMATS)


# --- the GPU image and the engine cache ----------------------------------------------------------------------


def test_gpu_image_installs_onnxruntime_gpu_instead_of_the_cpu_wheel() -> None:
    variants = image_extras("serve-gpu")
    for variant, extras in variants.items():
        dists = distributions(extras)
        assert "onnxruntime-gpu" in dists, f"serve-gpu ({variant}): no onnxruntime-gpu"
        # Both wheels install the `onnxruntime` module: beside each other, whichever came last wins, file by file.
        assert "onnxruntime" not in dists, f"serve-gpu ({variant}): the CPU onnxruntime beside onnxruntime-gpu"
        # Exactly what its backends need: no torch (the runners do not use it), no CPU-only OpenVINO.
        assert not {"torch", "openvino"} & dists, f"serve-gpu ({variant}): {sorted({'torch', 'openvino'} & dists)}"
    with_trt = [v for v, extras in variants.items() if ("tensorrt", "cuda") in runtimes(distributions(extras))]
    assert with_trt, "no build of serve-gpu installs TensorRT"
    # The default build (the build arg's default) has no TensorRT: it is opt-in.
    (arg,) = {v.partition("=")[0] for v in variants}
    (default,) = [a.partition("=")[2] for s in venv_stages("serve-gpu") for a in stage_instructions(s, "ARG")
                  if a.partition("=")[0] == arg]  # fmt: skip
    assert f"{arg}={default}" in variants and f"{arg}={default}" not in with_trt
    assert "onnxruntime" in distributions(image_extras("serve-cpu")["default"])
    pins = (REPO / "constraints.txt").read_text()
    assert re.search(r"^onnxruntime-gpu==\S+", pins, re.MULTILINE), "constraints.txt must pin onnxruntime-gpu"


def _volumes(stage: str) -> set[str]:
    found = set()
    for args in stage_instructions(stage, "VOLUME"):
        try:
            found |= set(json.loads(args))
        except json.JSONDecodeError:
            found |= set(shlex.split(args))
    return found


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def test_gpu_image_engine_cache_is_a_volume() -> None:
    env = stage_env("serve-gpu")
    assert ENGINE_CACHE in env, "serve-gpu must set YOLOXPAI_ENGINE_CACHE (else engines land in /tmp/.cache)"
    assert any(_under(env[ENGINE_CACHE], v) for v in _volumes("serve-gpu")), f"{env[ENGINE_CACHE]}: not a VOLUME"


CUDA_SERVERS = [server for server in SERVERS if "cuda" in server.device]


def test_cuda_servers_are_found() -> None:
    assert "overlays/gpu" in {server.kustomization for server in CUDA_SERVERS}


@pytest.mark.parametrize("server", [pytest.param(s, id=s.where) for s in CUDA_SERVERS])
def test_engine_cache_is_on_a_shared_persistent_volume(server: Server) -> None:
    """An emptyDir (or the image's anonymous volume) dies with the pod: every new pod would rebuild its engines."""
    where, spec = server.where, pod_spec(server.workload)
    path = server.env.get(ENGINE_CACHE)
    assert path, f"{where}: set {ENGINE_CACHE} to the engine cache volume's mount path"
    mounts = [m for m in server.container.get("volumeMounts", []) if _under(path, m["mountPath"])]
    assert mounts, f"{where}: {ENGINE_CACHE}={path} is on no mounted volume"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    assert not mount.get("readOnly"), f"{where}: the engine cache mount is read-only"
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert "persistentVolumeClaim" in volume, f"{where}: the engine cache is on {sorted(set(volume) - {'name'})}"
    claim = one(render(server.kustomization), "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "every replica writes the cache: ReadWriteMany"
