"""Every server setting and command-line option the deployment files use exists, and every value parses.

Sources: the rendered Kubernetes manifests (env, envFrom ConfigMaps, command/args, ``sh -c`` scripts),
docker-compose.yml (environment, entrypoint/command) and the Dockerfile (ENV, ENTRYPOINT/CMD). A ``YOLOXPAI_X``
variable must be the env name of a ``Settings`` field and ``yoloxpai serve --x`` its flag; the other commands'
options must exist in their argparse parsers.
"""

from __future__ import annotations

import argparse
import importlib

import pytest

from ._manifests import (
    ENV_PREFIX,
    KUSTOMIZATIONS,
    compose_argv,
    container_argv,
    container_env,
    containers,
    dockerfile_stages,
    exec_form,
    load_compose,
    mapping,
    option_names,
    pod_spec,
    render,
    stage_env,
    stage_instructions,
    yoloxpai_invocations,
)

settings_module = pytest.importorskip("service.settings", reason="service.settings is not importable")
Settings = settings_module.Settings

FIELDS = tuple(Settings.model_fields)
SERVE_ENV = {ENV_PREFIX + field.upper() for field in FIELDS}


def _serve_flags() -> set[str]:
    """`yoloxpai serve`'s options: its real parser, else the Settings-derived names (``max_batch_size`` ->
    ``--max-batch-size``). The parser is the truth where it differs (list fields take a singular flag)."""
    try:
        serve_cli = importlib.import_module("service.cli")
    except ImportError:
        return {"--" + field.replace("_", "-") for field in FIELDS}
    parser = argparse.ArgumentParser(prog="yoloxpai serve")
    serve_cli.add_arguments(parser)
    return set(parser._option_string_actions)


SERVE_FLAGS = _serve_flags()


def _sources() -> list[tuple[str, dict[str, str], list[str]]]:
    """(where, environment, argv) for every container, compose service and image stage."""
    found: list[tuple[str, dict[str, str], list[str]]] = []
    for kustomization in KUSTOMIZATIONS:
        docs = render(kustomization)
        for doc in docs:
            spec = pod_spec(doc)
            for container in containers(spec) if spec else []:
                where = f"deploy/k8s/{kustomization} {doc['kind']}/{doc['metadata']['name']}:{container['name']}"
                found.append((where, container_env(container, docs), container_argv(container)))
    for name, service in load_compose().get("services", {}).items():
        found.append((f"docker-compose.yml service {name}", mapping(service.get("environment")),
                      compose_argv(service)))  # fmt: skip
    for stage in dockerfile_stages():
        # The last ENTRYPOINT / CMD of a stage is the one that runs.
        entrypoint = [exec_form(a) or [] for a in stage_instructions(stage, "ENTRYPOINT")][-1:] or [[]]
        cmd = [exec_form(a) or [] for a in stage_instructions(stage, "CMD")][-1:] or [[]]
        found.append((f"Dockerfile stage {stage}", stage_env(stage), [*entrypoint[0], *cmd[0]]))
    return found


SOURCES = _sources()


def _server_environments() -> list[tuple[str, dict[str, str]]]:
    return [(where, {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}) for where, env, _ in SOURCES]


def _invocations() -> list[tuple[str, str, list[str]]]:
    return [(where, command, words) for where, _, argv in SOURCES for command, words in yoloxpai_invocations(argv)]


def test_sources_are_found() -> None:
    """Guard against a vacuous pass: the known users of settings are seen."""
    envs = dict(_server_environments())
    assert "YOLOXPAI_DRAIN_TIMEOUT_S" in envs["deploy/k8s/overlays/cpu Deployment/yoloxpai:server"]
    assert "YOLOXPAI_BACKEND" in envs["deploy/k8s/overlays/gpu Deployment/yoloxpai:server"]
    assert "YOLOXPAI_MODEL_REPOSITORY" in envs["docker-compose.yml service serve"]
    assert "YOLOXPAI_MODEL_REPOSITORY" in envs["Dockerfile stage serve-cpu"]
    assert {"serve", "make-dataset", "train", "export"} <= {command for _, command, _ in _invocations()}
    serve_options = {option for _, command, words in _invocations() if command == "serve"
                     for option in option_names(words)}  # fmt: skip
    assert "--http-port" in serve_options


@pytest.mark.parametrize("where, env", [pytest.param(*item, id=item[0]) for item in _server_environments()])
def test_environment_variables_are_settings(where: str, env: dict[str, str]) -> None:
    unknown = sorted(set(env) - SERVE_ENV)
    assert not unknown, f"{where}: {unknown} are not `yoloxpai serve` settings (service/settings.py)"
    # The values must parse too: a typo in a Literal (backend) or a unit mistake fails here, not in the pod.
    Settings(**{name.removeprefix(ENV_PREFIX).lower(): value for name, value in env.items()})


@pytest.mark.parametrize(
    "where, command, words", [pytest.param(*item, id=f"{item[0]} {item[1]}") for item in _invocations()]
)
def test_command_line_options_exist(where: str, command: str, words: list[str]) -> None:
    cli = importlib.import_module("yoloxpai.cli")
    assert command in cli.COMMANDS, f"{where}: `yoloxpai {command}` is not a command"
    if command == "serve":
        unknown = sorted(set(option_names(words)) - SERVE_FLAGS)
        assert not unknown, f"{where}: `yoloxpai serve` has no {unknown} (flags are Settings fields)"
        return
    module_name = cli.COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.skip(f"{module_name} (yoloxpai {command}) is not importable yet: {exc}")
    parser = argparse.ArgumentParser(prog=f"yoloxpai {command}")
    module.add_arguments(parser)
    known = set(parser._option_string_actions)
    unknown = sorted(set(option_names(words)) - known)
    assert not unknown, f"{where}: `yoloxpai {command}` has no {unknown}"
