"""Readers for the deployment files: rendered kustomizations, docker-compose.yml, the Dockerfile, docs/contracts.md.

Shared by the tests of this package; nothing here asserts. Everything is read from the repository as committed,
so the tests see exactly what a user deploys.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
CONTRACTS = REPO / "docs" / "contracts.md"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
DASHBOARD = REPO / "deploy" / "compose" / "grafana" / "dashboards" / "yoloxpai.json"

OVERLAYS = ("overlays/cpu", "overlays/gpu")
KUSTOMIZATIONS = (*OVERLAYS, "kserve", "train")
ENV_PREFIX = "YOLOXPAI_"


# --- Kubernetes -----------------------------------------------------------------------------------------------


@functools.cache
def render(kustomization: str) -> tuple[dict, ...]:
    """``kubectl kustomize deploy/k8s/<kustomization>``, parsed; raises with kubectl's message on failure."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl (with its built-in kustomize) is needed to render deploy/k8s; install kubectl")
    proc = subprocess.run([kubectl, "kustomize", str(K8S / kustomization)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {kustomization} failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def objects(docs: tuple[dict, ...], kind: str) -> list[dict]:
    """Every object of ``kind``."""
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: tuple[dict, ...], kind: str, name: str | None = None) -> dict:
    """The single object of ``kind`` (and ``name``, when given)."""
    found = [doc for doc in objects(docs, kind) if name is None or doc["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def pod_spec(doc: dict) -> dict | None:
    """The pod spec of a workload (Deployment, Job, KServe predictor), else None."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]
    return None


def containers(spec: dict) -> list[dict]:
    """Init containers, then containers."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def container_env(container: dict, docs: tuple[dict, ...]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: ``envFrom`` ConfigMaps first, then ``env``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            env.update(one(docs, "ConfigMap", ref["name"]).get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def container_argv(container: dict) -> list[str]:
    """command + args, with the image's ENTRYPOINT (``yoloxpai`` for every target) when ``command`` is unset."""
    command = container.get("command") or ["yoloxpai"]
    return [*command, *container.get("args", [])]


def probe_port(probe: dict, container: dict) -> int:
    """The container port a probe reaches (resolving a named port)."""
    action = probe.get("httpGet") or probe.get("grpc") or probe.get("tcpSocket")
    port = action["port"]
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a matchLabels-style selector matches ``labels``."""
    return all(labels.get(key) == value for key, value in selector.items())


# --- docker-compose.yml ----------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["bare"]:
            return env.get(match["bare"], "")
        expr = match["braced"]
        for operator in (":-", "-", ":?", "?", ":+", "+"):
            name, sep, default = expr.partition(operator)
            if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                value = env.get(name)
                if operator in (":-", "-"):
                    empty = value is None or (operator == ":-" and value == "")
                    return default if empty else value
                if operator in (":+", "+"):
                    return default if value else ""
                if value is None or value == "":
                    raise ValueError(f"compose variable {name} is required: {default}")
                return value
        return env.get(expr, "")

    return _VARIABLE.sub(substitute, text)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


# The variables docker-compose.yml requires (``${VAR:?...}``), as a user's .env would set them.
COMPOSE_REQUIRED_ENV = {"GRAFANA_ADMIN_PASSWORD": "test-only-grafana-password"}


def load_compose(env: Mapping[str, str] | None = None) -> dict:
    """docker-compose.yml after interpolation with ``env`` (default: only the required variables, so defaults
    apply to the rest); raises ``ValueError`` when a required variable is missing."""
    return _interpolate_tree(yaml.safe_load(COMPOSE_FILE.read_text()), COMPOSE_REQUIRED_ENV if env is None else env)


def mapping(value: Any) -> dict[str, str]:
    """A compose ``environment``/``labels`` value (mapping or ``KEY=VALUE`` list) as a dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return dict(item.partition("=")[::2] for item in value)


def compose_argv(service: dict) -> list[str]:
    """entrypoint + command of a compose service; for our images the default ENTRYPOINT is ``yoloxpai``."""

    def words(value: Any) -> list[str]:
        if value is None:
            return []
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    ours = "build" in service or str(service.get("image", "")).startswith("yoloxpai:")
    entrypoint = words(service.get("entrypoint")) or (["yoloxpai"] if ours else [])
    return [*entrypoint, *words(service.get("command"))]


# --- Dockerfile ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One logical Dockerfile instruction (continuation lines joined) and the stage it belongs to."""

    stage: str
    keyword: str
    args: str


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions in order; the stage is the ``AS`` name of the enclosing FROM."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out: list[Instruction] = []
    stage = ""
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stage = match[1] if match else ""
        out.append(Instruction(stage, keyword, args.strip()))
    return tuple(out)


def dockerfile_stages() -> list[str]:
    """Stage names, in order."""
    return [i.stage for i in dockerfile() if i.keyword == "FROM"]


def stage_instructions(stage: str, keyword: str) -> list[str]:
    """Arguments of every ``keyword`` instruction in ``stage``."""
    return [i.args for i in dockerfile() if i.stage == stage and i.keyword == keyword]


def exec_form(args: str) -> list[str] | None:
    """A JSON-array (exec form) argument list, or None for shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def stage_env(stage: str) -> dict[str, str]:
    """``ENV KEY=VALUE ...`` of one stage."""
    env: dict[str, str] = {}
    for args in stage_instructions(stage, "ENV"):
        for word in shlex.split(args):
            key, sep, value = word.partition("=")
            if sep:
                env[key] = value
    return env


# --- yoloxpai command lines ------------------------------------------------------------------------------------

_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "then", "do", "else", "if", "!"}


def _shell_commands(script: str) -> Iterator[list[str]]:
    """Simple commands of a POSIX shell script (enough for ours: no heredocs, no nesting)."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in lexer:
            if token in _SEPARATORS:
                if words:
                    yield words
                words = []
            else:
                words.append(token)
        if words:
            yield words


def yoloxpai_invocations(argv: list[str]) -> list[tuple[str, list[str]]]:
    """Every ``yoloxpai COMMAND ...`` in an argv (directly, via ``sh -c``, or ``torchrun -m yoloxpai.cli``)."""
    if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
        commands = list(_shell_commands(argv[2]))
    else:
        commands = [argv]
    found = []
    for words in commands:
        for i, word in enumerate(words):
            is_cli = Path(word).name == "yoloxpai" or (word == "yoloxpai.cli" and i > 0 and words[i - 1] == "-m")
            if is_cli and i + 1 < len(words) and not words[i + 1].startswith("-"):
                found.append((words[i + 1], words[i + 2 :]))
                break
    return found


def option_names(words: list[str]) -> list[str]:
    """The ``--long-option`` words (``--a=b`` gives ``--a``)."""
    return [word.partition("=")[0] for word in words if word.startswith("--")]


# --- docs/contracts.md metric table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractMetric:
    """One row of the metric table in docs/contracts.md."""

    name: str
    type: str  # counter | gauge | histogram
    labels: frozenset[str]


@functools.cache
def contract_metrics() -> dict[str, ContractMetric]:
    """The Prometheus metric table of docs/contracts.md, by exposition name."""
    rows: dict[str, ContractMetric] = {}
    for line in CONTRACTS.read_text().splitlines():
        match = re.match(r"\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|\s*([a-z]+)[^|]*\|([^|]*)\|", line)
        if not match:
            continue
        labels_text = re.sub(r"\([^)]*\)", "", match[3])
        labels = {word.strip() for word in labels_text.split(",")} - {"", "—", "-"}
        rows[match[1]] = ContractMetric(match[1], match[2], frozenset(labels))
    return rows


@functools.cache
def contract_http_paths() -> frozenset[str]:
    """The HTTP paths docs/contracts.md lists on the HTTP port line."""
    for line in CONTRACTS.read_text().splitlines():
        if line.startswith("HTTP "):
            return frozenset(re.findall(r"`(/[^`]*)`", line))
    return frozenset()


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_METRIC = re.compile(r"\b(?:yoloxpai|nv)_[a-z0-9_]*[a-z0-9]\b")


def metric_names(expr: str) -> set[str]:
    """The yoloxpai_* / nv_* series names a PromQL expression (or adapter query) mentions."""
    return set(_METRIC.findall(expr))


def resolve_series(series: str) -> tuple[ContractMetric, str] | None:
    """(table row, suffix) for a series name, e.g. ``..._seconds_bucket`` -> (histogram row, "_bucket")."""
    table = contract_metrics()
    if series in table:
        return table[series], ""
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if series.endswith(suffix) and table.get(base) and table[base].type == "histogram":
            return table[base], suffix
    return None


def label_names(expr: str) -> set[str]:
    """Label names used in matchers ``{a="x"}`` and in ``by (...)`` / ``without (...)`` clauses."""
    names: set[str] = set()
    for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        names.update(word.strip() for word in clause.split(","))
    for body in re.findall(r"\{([^{}]*)\}", expr):
        names.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    return {name for name in names if name and not name.startswith("<<")}


# --- PromQL sources in deploy/ ---------------------------------------------------------------------------------


def adapter_rules() -> list[dict]:
    """The prometheus-adapter custom rules."""
    return yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]


def dashboard() -> dict:
    """The Grafana dashboard JSON."""
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of the dashboard, template variables included."""
    board = dashboard()
    found: list[tuple[str, str]] = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            found.append((f"variable {variable['name']}", query))
    return found


def promql_sources() -> list[tuple[str, str]]:
    """(where, expression) for every PromQL the deployment files hand to Prometheus or the adapter."""
    sources = [(f"dashboard: {title}", expr) for title, expr in dashboard_exprs()]
    for rule in adapter_rules():
        sources.append(("adapter seriesQuery", rule["seriesQuery"]))
        sources.append(("adapter metricsQuery", rule["metricsQuery"]))
    return sources
