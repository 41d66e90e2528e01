"""docker-compose.yml: valid against the Compose Specification schema, and its services fit together (ports,
volumes, the train profile, Prometheus and Grafana provisioning)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib import resources

import jsonschema
import pytest
import yaml

from ._manifests import (
    COMPOSE_FILE,
    COMPOSE_REQUIRED_ENV,
    DASHBOARD,
    REPO,
    compose_argv,
    dockerfile_stages,
    interpolate,
    load_compose,
    mapping,
    stage_instructions,
    yoloxpai_invocations,
)


def _compose_schema() -> dict:
    # The Compose Specification JSON schema as vendored (with its licence) by check-jsonschema, a pinned dev
    # dependency: offline, and updated by bumping one pin.
    path = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(path.read_text())


def _serve_option(words: list[str], option: str) -> str:
    return words[words.index(option) + 1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_interpolation() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("$A ${A} ${B:-x} ${EMPTY:-y} ${EMPTY-z} $$A", env) == "1 1 x y  $A"


@pytest.mark.parametrize("env", [{}, {"TRAIN_EPOCHS": "3", "PROMETHEUS_IMAGE": "prom/prometheus:latest"}])
def test_matches_the_compose_specification(env: dict[str, str]) -> None:
    jsonschema.Draft202012Validator(_compose_schema()).validate(load_compose({**COMPOSE_REQUIRED_ENV, **env}))


def test_schema_rejects_a_typo(compose: dict) -> None:
    """The schema check is not vacuous: an unknown service key fails."""
    broken = {**compose, "services": {**compose["services"], "serve": {**compose["services"]["serve"], "port": []}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(_compose_schema()).validate(broken)


def test_docker_compose_config_accepts_it() -> None:
    """The real parser, where Compose v2 is installed (the schema test above runs everywhere)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("Docker Compose v2 (`docker compose`) is not installed; validated against the schema instead")
    proc = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--profile", "train", "config", "--quiet"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **COMPOSE_REQUIRED_ENV},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_grafana_admin_password_has_no_default() -> None:
    """Compose refuses to start without GRAFANA_ADMIN_PASSWORD (``${VAR:?}``) instead of falling back to one."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]["environment"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", raw["GF_SECURITY_ADMIN_PASSWORD"])
    for env in ({}, {"GRAFANA_ADMIN_PASSWORD": ""}):
        with pytest.raises(ValueError, match="GRAFANA_ADMIN_PASSWORD is required"):
            load_compose(env)
    grafana = load_compose({"GRAFANA_ADMIN_PASSWORD": "s3cret-from-env"})["services"]["grafana"]
    assert mapping(grafana["environment"])["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-from-env"
    # No other secret-looking variable falls back to a default either.
    defaults = re.findall(r"\$\{([A-Z0-9_]*(?:PASSWORD|SECRET|TOKEN|KEY)[A-Z0-9_]*):?-", COMPOSE_FILE.read_text())
    assert not defaults, f"secrets with a default value: {defaults}"


def test_train_can_write_the_models_volume_serve_filled(compose: dict) -> None:
    """The serve image's /models is root-owned (read-only to uid 10001); when serve created the `models` volume,
    Docker copied that owner into it. A root one-shot hands the volume's top directory to train's user first."""
    services = compose["services"]
    init, train = services["models-init"], services["train"]
    assert train["depends_on"]["models-init"] == {"condition": "service_completed_successfully"}
    assert init["profiles"] == train["profiles"] == ["train"]
    train_uid = stage_instructions(train["build"]["target"], "USER")[-1].split(":")[0]
    volume, mount = next(v.split(":")[:2] for v in train["volumes"] if v.split(":")[0] == "models")
    assert f"{volume}:{mount}" in init["volumes"]
    argv = compose_argv(init)
    assert argv[0] == "chown" and argv[1].split(":")[0] == train_uid and argv[2:] == [mount], argv
    assert "-R" not in argv, "only the top directory: the baked-in bundles stay root-owned"
    assert init["user"].split(":")[0] == "0"
    assert init["cap_drop"] == ["ALL"] and init["cap_add"] == ["CHOWN"]
    assert init["network_mode"] == "none"


def test_serve_publishes_the_ports_it_binds(compose: dict) -> None:
    serve = compose["services"]["serve"]
    ((command, words),) = yoloxpai_invocations(compose_argv(serve))
    assert command == "serve"
    http_port, grpc_port = _serve_option(words, "--http-port"), _serve_option(words, "--grpc-port")
    published = {port.rpartition(":")[2] for port in serve["ports"]}
    assert published == {http_port, grpc_port} == {"8000", "8001"}
    assert serve["build"]["target"] in dockerfile_stages()


def test_serve_drains_before_docker_kills_it(compose: dict) -> None:
    serve = compose["services"]["serve"]
    env = mapping(serve["environment"])
    budget_s = float(env["YOLOXPAI_DRAIN_TIMEOUT_S"]) + float(env.get("YOLOXPAI_SHUTDOWN_DELAY_S", 0))
    assert serve["stop_grace_period"].endswith("s")
    assert float(serve["stop_grace_period"][:-1]) > budget_s


def test_train_profile_hands_its_bundle_to_serve(compose: dict) -> None:
    services = compose["services"]
    train, serve = services["train"], services["serve"]
    assert train["profiles"] == ["train"]
    assert all("profiles" not in services[name] for name in ("serve", "prometheus", "grafana"))
    assert train["build"]["target"] in dockerfile_stages()
    dependency = serve["depends_on"]["train"]
    assert dependency == {"condition": "service_completed_successfully", "required": False}

    repository = mapping(serve["environment"])["YOLOXPAI_MODEL_REPOSITORY"]
    serve_volume = next(v for v in serve["volumes"] if v.split(":")[1] == repository)
    volume_name = serve_volume.split(":")[0]
    assert volume_name in compose["volumes"]
    train_mount = next(v.split(":")[1] for v in train["volumes"] if v.split(":")[0] == volume_name)
    commands = dict(yoloxpai_invocations(compose_argv(train)))
    assert {"make-dataset", "train", "export"} <= set(commands)
    # The export publishes straight into the repository serve reads, as a new version (atomically: no mv dance).
    export = commands["export"]
    assert export[export.index("--repository") + 1] == train_mount and "--out" not in export
    assert " mv " not in compose_argv(train)[2]
    env = mapping(serve["environment"])
    assert env["YOLOXPAI_MODEL_CONTROL"] == "poll", "serve must notice the new version without a restart"


def test_prometheus_scrapes_serve(compose: dict) -> None:
    prometheus = compose["services"]["prometheus"]
    source = next(v.split(":")[0] for v in prometheus["volumes"] if v.split(":")[1].endswith("prometheus.yml"))
    config = yaml.safe_load((REPO / source).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (static,) = job["static_configs"]
    serve_words = yoloxpai_invocations(compose_argv(compose["services"]["serve"]))[0][1]
    assert static["targets"] == [f"serve:{_serve_option(serve_words, '--http-port')}"]
    # The labels the dashboard groups by, as prometheus-operator sets them in Kubernetes.
    assert {"pod", "namespace"} <= set(static["labels"])


def test_grafana_is_provisioned(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: REPO / v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "yoloxpai.yml").read_text())["providers"]
    dashboards_dir = mounts[provider["options"]["path"]]
    assert (dashboards_dir / DASHBOARD.name).samefile(DASHBOARD)
    home = mapping(grafana["environment"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
