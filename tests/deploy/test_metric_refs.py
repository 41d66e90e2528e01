"""Metric names and labels in the deployment files (prometheus-adapter rule, Grafana dashboard) are the ones in
docs/contracts.md, used the way their types allow, and the dashboard covers what operators need."""

from __future__ import annotations

import re

import pytest

from ._manifests import (
    contract_metrics,
    dashboard,
    dashboard_exprs,
    label_names,
    metric_names,
    promql_sources,
    resolve_series,
)

# Labels Prometheus itself or the scrape adds (prometheus-operator: namespace, pod, service, endpoint, container).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}


def test_contract_table_is_read() -> None:
    table = contract_metrics()
    assert table["yoloxpai_queue_wait_seconds"].type == "histogram"
    assert table["yoloxpai_requests_total"].labels == {"protocol", "model", "code"}
    assert table["yoloxpai_decode_duration_seconds"].labels == frozenset()
    assert len(table) >= 20


@pytest.mark.parametrize("where, expr", promql_sources())
def test_metric_names_are_in_the_contract(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no yoloxpai_*/nv_* metric in {expr!r}"
    for series in names:
        resolved = resolve_series(series)
        assert resolved, f"{where}: {series} is not in docs/contracts.md (histograms need _bucket/_sum/_count)"
        metric, suffix = resolved
        assert metric.type != "histogram" or suffix, f"{where}: histogram {series} has no bare series"


@pytest.mark.parametrize("where, expr", promql_sources())
def test_label_names_exist_on_the_metrics(where: str, expr: str) -> None:
    allowed = set(TARGET_LABELS)
    for series in metric_names(expr):
        metric, suffix = resolve_series(series)
        allowed |= metric.labels | ({"le"} if suffix == "_bucket" else set())
    unknown = label_names(expr) - allowed
    assert not unknown, f"{where}: labels {sorted(unknown)} exist on none of its metrics"


def test_counters_and_histograms_are_rated() -> None:
    """A raw counter only grows: panels and the HPA must use rate()/increase() on counters and histogram parts.

    (The adapter's seriesQuery only discovers series; its metricsQuery computes the value.)
    """
    for where, expr in promql_sources():
        if where == "adapter seriesQuery":
            continue
        for series in metric_names(expr):
            metric, suffix = resolve_series(series)
            if metric.type == "counter" or suffix:
                pattern = rf"(rate|increase)\(\s*{series}\b"
                assert re.search(pattern, expr), f"{where}: {series} used without rate()/increase()"


def test_dashboard_covers_the_operating_questions() -> None:
    exprs = " ".join(expr for _, expr in dashboard_exprs())
    assert "rate(yoloxpai_requests_total" in exprs, "throughput"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(yoloxpai_request_duration_seconds_bucket" in exprs
    assert "yoloxpai_batch_size_bucket" in exprs, "batch-size distribution"
    assert "yoloxpai_queue_depth" in exprs, "queue depth"
    assert re.search(r"sum by \(code\) \(rate\(yoloxpai_requests_total\{[^}]*code!=\"ok\"", exprs), "errors by code"
    heatmaps = [p for p in dashboard()["panels"] if p["type"] == "heatmap"]
    assert any("yoloxpai_batch_size_bucket" in t["expr"] and t.get("format") == "heatmap"
               for p in heatmaps for t in p["targets"])  # fmt: skip


def test_dashboard_panels_use_the_datasource_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
