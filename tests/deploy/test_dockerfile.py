"""Dockerfile and .dockerignore, read statically: the targets exist and the serving images are lean, non-root,
health-checked and receive signals themselves."""

from __future__ import annotations

import fnmatch
import re

import pytest

from ._manifests import REPO, dockerfile, dockerfile_stages, exec_form, stage_env, stage_instructions

SERVING = ("serve-cpu", "serve-gpu")
BUILD_TOOLS = re.compile(r"\b(pip|pip3|gcc|g\+\+|clang|make|build-essential|python3-dev|python3-pip|python3-venv)\b")


def _last(stage: str, keyword: str) -> str:
    values = stage_instructions(stage, keyword)
    assert values, f"stage {stage} has no {keyword}"
    return values[-1]


def test_targets_exist() -> None:
    assert {"serve-cpu", "serve-gpu", "train"} <= set(dockerfile_stages())


@pytest.mark.parametrize("stage", [*SERVING, "train"])
def test_runs_as_a_numeric_non_root_user(stage: str) -> None:
    user = _last(stage, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric uid so Kubernetes' runAsNonRoot can verify it"
    assert int(uid) == 10001, "deploy/k8s and the compose volumes assume uid 10001"


@pytest.mark.parametrize("stage", SERVING)
def test_serving_image_entrypoint_and_signals(stage: str) -> None:
    # Exec form: the server itself is PID 1 and receives SIGTERM (a shell would swallow it).
    assert exec_form(_last(stage, "ENTRYPOINT")) == ["yoloxpai"]
    assert exec_form(_last(stage, "CMD")) == ["serve"]
    assert _last(stage, "STOPSIGNAL") == "SIGTERM"
    healthcheck = _last(stage, "HEALTHCHECK")
    command = exec_form(healthcheck.split(" CMD ", 1)[1])
    assert command is not None, "HEALTHCHECK must use the exec form"
    assert "/healthz" in " ".join(command), "the health check is liveness, not readiness"


@pytest.mark.parametrize("stage", SERVING)
def test_serving_image_exposes_the_default_ports(stage: str) -> None:
    settings = pytest.importorskip("service.settings", reason="service.settings is not importable").Settings
    exposed = {int(p) for args in stage_instructions(stage, "EXPOSE") for p in args.split()}
    defaults = {settings.model_fields[f].default for f in ("http_port", "grpc_port")}
    assert exposed == defaults


@pytest.mark.parametrize("stage", SERVING)
def test_serving_image_has_no_build_tools(stage: str) -> None:
    for run in stage_instructions(stage, "RUN"):
        installed = " ".join(re.findall(r"apt-get install ([^&;]*)", run))
        assert not BUILD_TOOLS.search(installed), f"{stage} installs build tools: {installed}"
        assert "pip install" not in run, f"{stage} runs pip; install in a builder stage instead"
    for copy in stage_instructions(stage, "COPY"):
        assert "--from=" in copy, f"{stage} copies from the build context: {copy}"
        sources = [word for word in copy.split() if not word.startswith("--")][:-1]
        assert set(sources) <= {"/opt/venv", "/models"}, f"{stage} copies more than the venv and bundles: {copy}"


@pytest.mark.parametrize("stage", SERVING)
def test_serving_image_reads_models_from_slash_models(stage: str) -> None:
    assert stage_env(stage)["YOLOXPAI_MODEL_REPOSITORY"] == "/models"
    assert stage_env(stage)["PYTHONDONTWRITEBYTECODE"] == "1", "the root filesystem is read-only in Kubernetes"


@pytest.mark.parametrize("stage", SERVING)
def test_baked_models_are_read_only_to_the_server_user(stage: str) -> None:
    """uid 10001 reads the baked-in bundles but cannot replace them (a writable root filesystem included)."""
    (copy,) = [c for c in stage_instructions(stage, "COPY") if c.split()[-1] == "/models"]
    flags = dict(word[2:].partition("=")[::2] for word in copy.split() if word.startswith("--"))
    # COPY without --chown gives root:root; --chmod would need BuildKit (this Dockerfile avoids BuildKit-only syntax).
    assert flags.get("chown", "0:0").split(":")[0] in ("0", "root"), f"{stage}: /models must be owned by root"
    assert "chmod" not in flags, f"{stage}: set the modes in the builder, not with COPY --chmod"
    assert not any("/models" in run for run in stage_instructions(stage, "RUN")), f"{stage} changes /models"
    # The builder fixes the modes after the last copy into /models: others read (and enter) but never write.
    (run,) = [r for r in stage_instructions(flags["from"], "RUN") if "mkdir -p /models" in r]
    chmod = "chmod -R u=rwX,go=rX /models"
    assert chmod in run and run.index(chmod) > run.rindex("cp -r"), f"{flags['from']}: {chmod} after copying"


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _included(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            included = negated
    return included


def test_dockerignore_is_an_allow_list() -> None:
    patterns = _dockerignore()
    assert patterns[0] == "*", "start from nothing, so .venv, .git, runs/ and data never enter the context"
    for path in (".venv", ".git", "runs", "tests", "docs"):
        assert not _included(path, patterns), f"{path} would be sent to the docker daemon"


def test_every_copied_source_is_in_the_context() -> None:
    patterns = _dockerignore()
    for instruction in dockerfile():
        if instruction.keyword != "COPY" or "--from=" in instruction.args:
            continue
        words = [w for w in instruction.args.split() if not w.startswith("--")]
        for source in words[:-1]:
            if any(ch in source for ch in "*?["):
                continue  # optional inputs (.whl*, bundle[s]): may be absent
            assert _included(source, patterns), f"COPY {source}: excluded by .dockerignore"
            assert (REPO / source).exists() or source == "README.md", f"COPY {source}: not in the repository"
