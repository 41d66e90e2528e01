"""Offline validation for the custom resources we ship, whose CRDs are not in kubernetes-validate's schemas.

The ServiceMonitor (prometheus-operator, monitoring.coreos.com/v1) and InferenceService (KServe,
serving.kserve.io/v1beta1) schemas below are written from those projects' API references and cover the fields
these manifests may use. They are strict (unknown fields fail), so a typo cannot pass silently; a field we start
using must be added here first. Embedded Kubernetes types (ObjectMeta, LabelSelector, the KServe predictor's
PodSpec) are checked against kubernetes-validate's own definitions for the Kubernetes version under test.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"


def _ref(kind: str) -> dict:
    return {"$ref": _DEFS + kind}


_OBJECT_META = _ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
_LABEL_SELECTOR = _ref("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_OBJECT = {"type": "object"}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}
# Prometheus duration, as the operator's CRD defines it.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}


def _strict(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_RELABEL = _strict(
    {
        "sourceLabels": _STRINGS,
        "separator": _STRING,
        "targetLabel": _STRING,
        "regex": _STRING,
        "modulus": _INT,
        "replacement": _STRING,
        "action": {
            "enum": [
                "replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                "lowercase", "uppercase", "keepequal", "dropequal",
            ]
        },
    }
)  # fmt: skip

_ENDPOINT = _strict(
    {
        "port": _STRING,
        "targetPort": {"type": ["integer", "string"]},
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https"]},
        "params": {"type": "object", "additionalProperties": _STRINGS},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": _BOOL,
        "honorTimestamps": _BOOL,
        "trackTimestampsStaleness": _BOOL,
        "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL},
        "followRedirects": _BOOL,
        "enableHttp2": _BOOL,
        "filterRunning": _BOOL,
        "proxyUrl": _STRING,
        "tlsConfig": _OBJECT,
        "authorization": _OBJECT,
        "basicAuth": _OBJECT,
        "oauth2": _OBJECT,
        "bearerTokenSecret": _OBJECT,
    }
)

SERVICE_MONITOR = _strict(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _OBJECT_META,
        "spec": _strict(
            {
                "jobLabel": _STRING,
                "targetLabels": _STRINGS,
                "podTargetLabels": _STRINGS,
                "endpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1},
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": _strict({"any": _BOOL, "matchNames": _STRINGS}),
                "sampleLimit": _INT,
                "targetLimit": _INT,
                "labelLimit": _INT,
                "labelNameLengthLimit": _INT,
                "labelValueLengthLimit": _INT,
                "keepDroppedTargets": _INT,
                "attachMetadata": _strict({"node": _BOOL}),
                "scrapeClass": _STRING,
                "scrapeProtocols": _STRINGS,
            },
            required=("selector", "endpoints"),
        ),
    },
    required=("apiVersion", "kind", "metadata", "spec"),
)

# KServe's ComponentExtensionSpec and the PredictorSpec's own fields; everything else in `spec.predictor` is an
# inlined core PodSpec and is validated as one.
_PREDICTOR_EXTENSION = {
    "minReplicas": {"type": "integer", "minimum": 0},
    "maxReplicas": {"type": "integer", "minimum": 0},
    "scaleTarget": {"type": "integer", "minimum": 1},
    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "scaleMetricType": {"enum": ["Utilization", "AverageValue", "Value"]},
    "containerConcurrency": {"type": "integer", "minimum": 0},
    "timeout": {"type": "integer", "minimum": 1},
    "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
    "logger": _OBJECT,
    "batcher": _strict({"maxBatchSize": _INT, "maxLatency": _INT, "timeout": _INT}),
    "labels": _STRING_MAP,
    "annotations": _STRING_MAP,
    "deploymentStrategy": _OBJECT,
    "autoScaling": _OBJECT,
    "model": _OBJECT,
    "workerSpec": _OBJECT,
}

INFERENCE_SERVICE = _strict(
    {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": _OBJECT_META,
        "spec": _strict(
            {"predictor": _strict(_PREDICTOR_EXTENSION), "transformer": _OBJECT, "explainer": _OBJECT},
            required=("predictor",),
        ),
    },
    required=("apiVersion", "kind", "metadata", "spec"),
)

_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("serving.kserve.io/v1beta1", "InferenceService"): INFERENCE_SERVICE,
}


def has_schema(doc: dict) -> bool:
    """Whether ``doc`` is one of the custom resources covered here."""
    return (doc.get("apiVersion"), doc.get("kind")) in _SCHEMAS


def _registry(kube_version: str) -> Registry:
    major, minor = kube_version.split(".")[:2]
    path = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{major}.{minor}.0-local-strict"
    definitions = json.loads((path / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


def validate(doc: dict, kube_version: str) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` does not fit its schema (see module docstring)."""
    registry = _registry(kube_version)
    schema = _SCHEMAS[(doc["apiVersion"], doc["kind"])]
    checked: Any = doc
    if doc["kind"] == "InferenceService":
        predictor = doc["spec"]["predictor"]
        pod = {key: value for key, value in predictor.items() if key not in _PREDICTOR_EXTENSION}
        jsonschema.Draft202012Validator(_ref("io.k8s.api.core.v1.PodSpec"), registry=registry).validate(pod)
        extension = {key: value for key, value in predictor.items() if key in _PREDICTOR_EXTENSION}
        checked = {**doc, "spec": {**doc["spec"], "predictor": extension}}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(checked)
