"""Instance planning: the CPU defaults (batch instances + an idle-latency instance), explicit settings, quotas."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.batch_exec import resolve_decode_mode
from service.instance_plan import InstancePlan, available_cpus, plan_instances
from service.settings import Settings


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [
        (1, InstancePlan(1, 1, False, False, None, 2)),  # nothing to gain from a second session
        (2, InstancePlan(2, 1, False, True, 2, 2)),  # the measured best on 2 cores
        (8, InstancePlan(4, 2, False, True, 8, 2)),
        (16, InstancePlan(4, 4, False, True, 16, 2)),
    ],
)
def test_cpu_defaults_split_the_cores_and_add_a_latency_instance(cpus, expected):
    assert plan_instances(Settings(), "cpu", cpus=cpus) == expected


def test_explicit_settings_win_and_a_latency_instance_needs_spare_threads():
    one_big = plan_instances(Settings(instances_per_device=1), "cpu", cpus=4)
    assert one_big == InstancePlan(1, 4, False, False, None, 2)  # the instance already uses every core
    pinned = plan_instances(Settings(instances_per_device=3, inference_threads=1, inference_spin=True), "cpu", cpus=4)
    assert pinned == InstancePlan(3, 1, True, True, 4, 2)
    assert plan_instances(Settings(batches_per_instance=1), "cpu", cpus=4).depth == 1
    assert plan_instances(Settings(latency_instance=False), "cpu", cpus=4).latency_instance is False
    threads_only = plan_instances(Settings(inference_threads=2), "cpu", cpus=8)
    assert (threads_only.instances, threads_only.threads) == (4, 2)


def test_accelerators_and_torchscript_get_one_instance_and_no_latency_instance():
    # an accelerator holds one batch at a time: one formed behind the running batch would be smaller
    assert plan_instances(Settings(), "cuda:0", cpus=16) == InstancePlan(1, None, False, False, None, 1)
    assert plan_instances(Settings(batches_per_instance=2), "cuda:0", cpus=16).depth == 2
    assert plan_instances(Settings(instances_per_device=2), "cuda:1", cpus=16).instances == 2
    # torch's thread count is process-wide: sessions cannot split the cores.
    torchscript = plan_instances(Settings(backend="torchscript"), "cpu", cpus=8)
    assert torchscript == InstancePlan(1, None, False, False, None, 2)


def test_openvino_gets_one_instance_with_every_core():
    # measured: one OpenVINO session on both cores gives 1.8-2x the images/s of two 1-thread sessions
    assert plan_instances(Settings(backend="openvino"), "cpu", cpus=2) == InstancePlan(1, 2, False, False, None, 2)
    assert plan_instances(Settings(), "cpu", cpus=8, backend="openvino") == InstancePlan(1, 8, False, False, None, 2)
    assert plan_instances(Settings(), "cpu", cpus=8, backend="onnxruntime").instances == 4  # auto plans as before
    assert plan_instances(Settings(backend="openvino", instances_per_device=2), "cpu", cpus=4).instances == 2


def test_available_cpus_honours_a_cgroup_quota(tmp_path: Path):
    affinity = available_cpus(tmp_path)  # no cpu.max: the affinity mask
    assert affinity >= 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core still gets one thread
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{150000 * affinity} 100000\n")  # a quota above the mask: the mask wins
    assert available_cpus(tmp_path) == affinity


def test_decode_mode_auto_is_batch_on_cpu_and_pool_on_accelerators():
    assert resolve_decode_mode("auto", ("cpu",)) == "batch"
    assert resolve_decode_mode("auto", ("cuda:0",)) == "pool"
    assert resolve_decode_mode("pool", ("cpu",)) == "pool"
    assert resolve_decode_mode("batch", ("cuda:0", "cuda:1")) == "batch"
