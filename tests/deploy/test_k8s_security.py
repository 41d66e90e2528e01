"""deploy/k8s secure by default: API keys only from a Secret (no literal anywhere, no placeholder applied), and a
NetworkPolicy that admits the ingress controller and Prometheus to the server's named ports, metrics to Prometheus
only, with selectors an overlay can change."""

from __future__ import annotations

import os
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ._manifests import ENV_PREFIX, K8S, KUSTOMIZATIONS, OVERLAYS, containers, objects, one, pod_spec, render, selects

EXAMPLE_SECRET = K8S / "base" / "api-keys.example.yaml"
NETWORK_POLICY = K8S / "base" / "networkpolicy.yaml"
API_KEYS_ENV = ENV_PREFIX + "API_KEYS"
# Variable names that hold credentials: never a literal value in a manifest.
SECRET_NAME = re.compile(r"API_KEY|PASSWORD|TOKEN|SECRET|CREDENTIAL", re.IGNORECASE)


def _server_container(kustomization: str) -> tuple[tuple[dict, ...], dict]:
    docs = render(kustomization)
    if kustomization == "kserve":
        (container,) = containers(pod_spec(one(docs, "InferenceService")))
    else:
        pod = pod_spec(one(docs, "Deployment", "yoloxpai"))
        container = next(c for c in pod["containers"] if c["name"] == "server")
    return docs, container


def _example_secret() -> dict:
    return yaml.safe_load(EXAMPLE_SECRET.read_text())


# --- API keys ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", [*OVERLAYS, "kserve"])
def test_server_reads_api_keys_from_a_secret(kustomization: str) -> None:
    settings = pytest.importorskip("service.settings", reason="service.settings is not importable")
    assert API_KEYS_ENV.removeprefix(ENV_PREFIX).lower() in settings.Settings.model_fields
    docs, container = _server_container(kustomization)
    (item,) = [e for e in container.get("env", []) if e["name"] == API_KEYS_ENV]
    assert "value" not in item, f"{kustomization}: {API_KEYS_ENV} is a literal"
    ref = item["valueFrom"]["secretKeyRef"]
    example = _example_secret()
    assert ref["name"] == example["metadata"]["name"] and ref["key"] in example["stringData"]
    # Not optional: without the Secret the pod must not start (and serve without authentication).
    assert ref.get("optional", False) is False
    # Nothing else sets it: a ConfigMap entry would be shadowed today and leak the keys all the same.
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert API_KEYS_ENV not in one(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {})


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_credential_is_a_literal(kustomization: str) -> None:
    docs = render(kustomization)
    for config_map in objects(docs, "ConfigMap"):
        leaked = [key for key in config_map.get("data", {}) if SECRET_NAME.search(key)]
        assert not leaked, f"{kustomization}: ConfigMap {config_map['metadata']['name']} holds {leaked}"
    for doc in docs:
        spec = pod_spec(doc)
        for container in containers(spec) if spec else []:
            where = f"{kustomization} {doc['kind']}/{doc['metadata']['name']}:{container['name']}"
            literal = [e["name"] for e in container.get("env", []) if SECRET_NAME.search(e["name"]) and "value" in e]
            assert not literal, f"{where}: {literal} given as literal values"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                # Probe paths are open (/healthz, /readyz): a probe never needs, so never carries, a key.
                assert "httpHeaders" not in container.get(probe, {}).get("httpGet", {}), f"{where} {probe}"
    # The example's placeholder is never part of what gets applied.
    assert not [s for s in objects(docs, "Secret") if s["metadata"]["name"] == _example_secret()["metadata"]["name"]]


def test_example_secret_is_a_valid_placeholder() -> None:
    secret = _example_secret()
    kubernetes_validate.validate(secret, kubernetes_validate.latest_version(), strict=True)
    (value,) = secret["stringData"].values()
    assert value.startswith("REPLACE-ME"), "the example must not look like a usable key"
    assert "kubectl create secret generic yoloxpai-api-keys" in EXAMPLE_SECRET.read_text()


def test_a_secret_generator_in_an_overlay_is_wired_in(tmp_path: Path) -> None:
    """The kustomize way of docs/deploy.md: a generated (hash-suffixed) Secret renames the reference with it."""
    (tmp_path / "api-keys").write_text("key-one,key-two\n")
    kustomization = {
        "resources": [os.path.relpath(K8S / "overlays" / "cpu", tmp_path)],
        "secretGenerator": [{"name": "yoloxpai-api-keys", "files": ["api-keys"]}],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    docs = render(str(tmp_path))
    (secret,) = objects(docs, "Secret")
    container = next(c for c in pod_spec(one(docs, "Deployment"))["containers"] if c["name"] == "server")
    (item,) = [e for e in container["env"] if e["name"] == API_KEYS_ENV]
    assert item["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"] != "yoloxpai-api-keys"


# --- NetworkPolicy ----------------------------------------------------------------------------------------------


def _peer_name(peer: dict) -> str:
    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name", "*")
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    return f"{namespace}/{pods.get('app.kubernetes.io/name', '*')}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_ingress_and_prometheus_only(overlay: str) -> None:
    docs = render(overlay)
    policy = one(docs, "NetworkPolicy")
    deployment = one(docs, "Deployment", "yoloxpai")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels), "the policy must select the servers"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    server = next(c for c in pod_spec(deployment)["containers"] if c["name"] == "server")
    named = {p["name"]: p for p in server["ports"]}

    reachable: dict[str, set[str]] = {}  # peer -> port names it may reach
    for rule in policy["spec"]["ingress"]:
        # An empty `from` admits every source, missing `ports` every port: neither may appear.
        assert rule.get("from") and rule.get("ports"), rule
        for port in rule["ports"]:
            assert isinstance(port["port"], str) and port["port"] in named, f"{port} is not a container port name"
            assert port.get("protocol", "TCP") == named[port["port"]].get("protocol", "TCP")
        for peer in rule["from"]:
            assert "ipBlock" not in peer and "namespaceSelector" in peer, peer
            reachable.setdefault(_peer_name(peer), set()).update(p["port"] for p in rule["ports"])
    assert reachable == {
        "monitoring/prometheus": {"http", "grpc", "metrics"},
        "ingress-nginx/*": {"http", "grpc"},
    }
    assert set(named) == {"http", "grpc", "metrics"}, "a new container port needs a decision in the NetworkPolicy"


def test_network_policy_selectors_are_overridable(tmp_path: Path) -> None:
    """The JSON-patch paths documented in networkpolicy.yaml exist and change what they say."""
    documented = re.findall(r"^#\s+(/spec/ingress/\S+)\s+(.+?)\s*$", NETWORK_POLICY.read_text(), re.MULTILINE)
    assert len(documented) == 3, documented
    values = {path: ({"app": "my-prometheus"} if path.endswith("podSelector/matchLabels") else f"ns-{i}")
              for i, (path, _) in enumerate(documented)}  # fmt: skip
    operations = [{"op": "replace", "path": path, "value": value} for path, value in values.items()]
    kustomization = {
        "resources": [os.path.relpath(K8S / "overlays" / "cpu", tmp_path)],
        "patches": [{"target": {"kind": "NetworkPolicy", "name": "yoloxpai"}, "patch": yaml.safe_dump(operations)}],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    policy = one(render(str(tmp_path)), "NetworkPolicy")
    kubernetes_validate.validate(policy, kubernetes_validate.latest_version(), strict=True)
    prometheus, ingress = (rule["from"][0] for rule in policy["spec"]["ingress"])
    assert prometheus["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ns-0"}
    assert prometheus["podSelector"]["matchLabels"] == {"app": "my-prometheus"}
    assert ingress["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ns-2"}
