"""deploy/k8s: every kustomization renders, every object validates offline, and the objects agree with each other
and with the server (ports, probe paths, drain budget, selectors, the HPA's metric)."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from . import crd_schemas
from ._manifests import (
    KUSTOMIZATIONS,
    OVERLAYS,
    adapter_rules,
    container_env,
    containers,
    contract_http_paths,
    objects,
    one,
    pod_spec,
    probe_port,
    render,
    selects,
)

# The oldest Kubernetes these manifests target (matchLabelKeys, unhealthyPodEvictionPolicy, gRPC probes are on by
# default there) and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def _settings_default(field: str) -> object:
    settings = pytest.importorskip("service.settings", reason="service.settings is not importable")
    return settings.Settings.model_fields[field].default


def _server(overlay: str) -> tuple[tuple[dict, ...], dict, dict]:
    docs = render(overlay)
    deployment = one(docs, "Deployment", "yoloxpai")
    server = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "server")
    return docs, deployment, server


def _cpu_quantity(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_validates(kustomization: str, kube_version: str) -> None:
    docs = render(kustomization)
    assert docs, f"{kustomization} rendered nothing"
    for doc in docs:
        name = f"{kustomization}: {doc['kind']}/{doc['metadata']['name']}"
        if crd_schemas.has_schema(doc):
            crd_schemas.validate(doc, kube_version)
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is invalid for Kubernetes {kube_version}: {exc.message} at {list(exc.path)}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{name}: no schema to validate it against ({exc.message}); add one to crd_schemas.py")


def test_strict_validation_catches_a_typo() -> None:
    """The validator is not vacuous: an unknown field in a container fails."""
    _, deployment, _ = _server("overlays/cpu")
    broken = {**deployment, "spec": {**deployment["spec"], "template": {"spec": {"containers": [{"name": "x",
              "image": "y", "readinessprobe": {}}]}}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probes_match_the_server(overlay: str) -> None:
    docs, _, server = _server(overlay)
    env = container_env(server, docs)
    http_port = int(env.get("YOLOXPAI_HTTP_PORT", _settings_default("http_port")))
    grpc_port = int(env.get("YOLOXPAI_GRPC_PORT", _settings_default("grpc_port")))
    assert "YOLOXPAI_METRICS_PORT" in env, "metrics on their own port (plain HTTP, no key) for Prometheus"
    metrics_port = int(env["YOLOXPAI_METRICS_PORT"])
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}

    paths = contract_http_paths()
    startup, readiness, liveness = server["startupProbe"], server["readinessProbe"], server["livenessProbe"]
    assert startup["httpGet"]["path"] == readiness["httpGet"]["path"] == "/readyz"
    # Liveness must not depend on model readiness (a loading or overloaded pod is alive).
    assert liveness["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= paths, "probe paths must be listed in docs/contracts.md"
    for probe in (startup, readiness, liveness):
        assert probe_port(probe, server) == http_port

    # The startup budget covers model load (and TensorRT engine builds on GPUs).
    budget_s = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget_s >= (900 if overlay.endswith("gpu") else 300)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_drain(overlay: str) -> None:
    docs, deployment, server = _server(overlay)
    env = container_env(server, docs)
    drain_s = float(env.get("YOLOXPAI_DRAIN_TIMEOUT_S", _settings_default("drain_timeout_s")))
    delay_s = float(env.get("YOLOXPAI_SHUTDOWN_DELAY_S", _settings_default("shutdown_delay_s")))
    command = server["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    prestop_s = float(command[1])
    grace_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s >= prestop_s + delay_s + drain_s + 5, "grace must exceed preStop + shutdown delay + drain + margin"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_is_hardened_and_sized(overlay: str) -> None:
    _, deployment, server = _server(overlay)
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    security = server["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"
    assert mounts["/models"]["readOnly"] is True

    requests = server["resources"]["requests"]
    limits = server["resources"]["limits"]
    assert _cpu_quantity(requests["cpu"]) >= 1 and requests["memory"]
    assert limits["memory"]
    if overlay.endswith("gpu"):
        assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1"
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    else:
        assert "nvidia.com/gpu" not in limits

    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    keys = set()
    for constraint in spec["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"]["matchLabels"], pod_labels)
        keys.add(constraint["topologyKey"])
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_the_pods(overlay: str) -> None:
    docs, deployment, server = _server(overlay)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    services = {s["metadata"]["name"]: s for s in objects(docs, "Service")}
    assert set(services) == {"yoloxpai", "yoloxpai-grpc"}
    for service in services.values():
        assert selects(service["spec"]["selector"], pod_labels)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports
    main = {p["name"]: p for p in services["yoloxpai"]["spec"]["ports"]}
    assert main["http"]["port"] == container_ports["http"] and main["http"]["appProtocol"] == "http"
    assert main["grpc"]["port"] == container_ports["grpc"]
    assert main["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    headless = services["yoloxpai-grpc"]["spec"]
    assert headless["clusterIP"] == "None"
    assert [p["targetPort"] for p in headless["ports"]] == ["grpc"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_configmap_is_the_one_mounted(overlay: str) -> None:
    docs, _, server = _server(overlay)
    names = [source["configMapRef"]["name"] for source in server["envFrom"]]
    assert len(names) == 1 and re.fullmatch(r"yoloxpai-settings-[a-z0-9]{10}", names[0]), names
    assert one(docs, "ConfigMap", names[0])["data"]["YOLOXPAI_MODEL_REPOSITORY"] == "/models"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_scrapes_the_metrics_port_once(overlay: str) -> None:
    docs, deployment, server = _server(overlay)
    monitor = one(docs, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    matched = [s for s in objects(docs, "Service") if selects(selector, s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in matched] == ["yoloxpai"], "each pod must be scraped exactly once"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and "/metrics" in contract_http_paths()
    assert endpoint["scheme"] == "http", "the metrics port is plain HTTP, whatever the HTTP port's TLS"
    service_port = next(p for p in matched[0]["spec"]["ports"] if p["name"] == endpoint["port"])
    metrics = next(p for p in server["ports"] if p["name"] == "metrics")
    assert service_port["targetPort"] in (metrics["name"], metrics["containerPort"])
    # Annotation-based discovery points at the same port and path.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/scheme"] == "http"
    assert annotations["prometheus.io/port"] == str(metrics["containerPort"])
    assert annotations["prometheus.io/path"] == endpoint["path"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_the_deployment_on_the_adapter_metric(overlay: str) -> None:
    docs, deployment, _ = _server(overlay)
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    produced = {rule["name"]["as"] for rule in adapter_rules()}
    assert metric["pods"]["metric"]["name"] in produced, "the HPA asks for a metric no adapter rule produces"
    assert hpa["spec"]["minReplicas"] >= 2, "one replica cannot survive a disruption"
    assert {"scaleUp", "scaleDown"} <= set(hpa["spec"]["behavior"])

    pdb = one(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    assert pdb["spec"]["maxUnavailable"] == 1


def test_gpu_autoscaling_is_slower_than_cpu() -> None:
    cpu = one(render("overlays/cpu"), "HorizontalPodAutoscaler")["spec"]["behavior"]
    gpu = one(render("overlays/gpu"), "HorizontalPodAutoscaler")["spec"]["behavior"]
    for direction in ("scaleUp", "scaleDown"):
        assert gpu[direction]["stabilizationWindowSeconds"] > cpu[direction]["stabilizationWindowSeconds"]
    gpu_up = max(p["value"] / p["periodSeconds"] for p in gpu["scaleUp"]["policies"] if p["type"] == "Pods")
    cpu_up = max(p["value"] / p["periodSeconds"] for p in cpu["scaleUp"]["policies"] if p["type"] == "Pods")
    assert gpu_up < cpu_up


def test_adapter_rule_is_rate_based_and_per_pod() -> None:
    (rule,) = adapter_rules()
    series = re.match(r"([a-z_]+)\{", rule["seriesQuery"])[1]
    assert re.fullmatch(rule["name"]["matches"], series)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    query = rule["metricsQuery"]
    # Rates of the histogram's _sum over its _count, summed per pod before dividing (a request-weighted mean).
    assert re.search(r"sum by \(<<\.GroupBy>>\) \(rate\(yoloxpai_queue_wait_seconds_sum\{<<\.LabelMatchers>>\}", query)
    assert re.search(
        r"sum by \(<<\.GroupBy>>\) \(rate\(yoloxpai_queue_wait_seconds_count\{<<\.LabelMatchers>>\}", query
    )
    assert "delta(" not in query and not re.search(r"\b1\s*\+", query)


def test_training_job_is_an_indexed_torchrun_group() -> None:
    docs = render("train")
    job = one(docs, "Job")
    spec = job["spec"]
    pod = pod_spec(job)
    trainer = next(c for c in pod["containers"] if c["name"] == "trainer")
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["NNODES"])
    assert int(env["NPROC_PER_NODE"]) == int(trainer["resources"]["limits"]["nvidia.com/gpu"])

    script = trainer["args"][0]
    assert "torchrun" in script and "--rdzv-backend=c10d" in script
    rendezvous_host = re.search(r"--rdzv-endpoint=\"?([^:\"]+):(\d+)", script)
    service = one(docs, "Service", pod["subdomain"])
    assert rendezvous_host[1] == f"{job['metadata']['name']}-0.{pod['subdomain']}"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    assert [p["port"] for p in service["spec"]["ports"]] == [int(rendezvous_host[2])]

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in trainer["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
    base_claims = {c["metadata"]["name"] for c in objects(render("overlays/cpu"), "PersistentVolumeClaim")}
    train_claims = {c["metadata"]["name"] for c in objects(docs, "PersistentVolumeClaim")}
    assert claims <= base_claims | train_claims
    assert "yoloxpai-models" in claims, "the Job must write its bundle where the servers read"


def test_training_job_publishes_into_the_served_repository() -> None:
    """The Job exports straight into the sub-path the server Deployment mounts as the model repository, as the next
    version of its model (``yoloxpai export --repository``: hidden, flushed, renamed), and the servers poll it."""
    job = one(render("train"), "Job")
    trainer = next(c for c in pod_spec(job)["containers"] if c["name"] == "trainer")
    store = next(m["mountPath"] for m in trainer["volumeMounts"] if m["name"] == "models")
    docs, _, server = _server("overlays/cpu")
    sub_path = next(m["subPath"] for m in server["volumeMounts"] if m["mountPath"] == "/models")
    script = trainer["args"][0]
    export = script.split("yoloxpai export", 1)[1]
    assert f'--repository {store}/{sub_path} --name "$BUNDLE_NAME"' in export and "--out" not in export
    assert "mv " not in script
    env = container_env(server, docs)
    assert env["YOLOXPAI_MODEL_CONTROL"] == "poll" and env["YOLOXPAI_MODEL_REPOSITORY"] == "/models"


def test_kserve_example_runs_our_image_with_our_probes() -> None:
    isvc = one(render("kserve"), "InferenceService")
    predictor = isvc["spec"]["predictor"]
    (container,) = containers(predictor)
    assert container["name"] == "kserve-container"
    assert container["image"].startswith("yoloxpai:serve-")
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    (port,) = container["ports"]
    assert port["containerPort"] == int(env["YOLOXPAI_HTTP_PORT"])
    assert isvc["metadata"]["annotations"]["prometheus.kserve.io/port"] == env["YOLOXPAI_METRICS_PORT"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    drain_s = float(env["YOLOXPAI_DRAIN_TIMEOUT_S"])
    prestop_s = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert predictor["terminationGracePeriodSeconds"] >= prestop_s + drain_s + 5
