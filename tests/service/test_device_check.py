"""``--device cuda`` without a visible GPU stops ``yoloxpai serve`` with one line naming the device, before any
bundle loads (``service.cli.check_devices``), and the driver probe behind it reads libcuda's answers right."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service import cli
from service.bundles import ConfigError


class Probe:
    """A stand-in for ``visible_cuda_devices`` that counts its calls."""

    def __init__(self, count: int, reason: str = "") -> None:
        self.answer, self.calls = (count, reason), 0

    def __call__(self) -> tuple[int, str]:
        self.calls += 1
        return self.answer


def test_cpu_devices_never_probe() -> None:
    fake = Probe(0, "no driver")
    cli.check_devices(("cpu",), probe=fake)
    assert fake.calls == 0


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_one_line_naming_the_device(device: str) -> None:
    with pytest.raises(ConfigError) as raised:
        cli.check_devices(("cpu", device), probe=Probe(0, "libcuda.so.1 cannot be loaded"))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"device {device} requested but no CUDA GPU is visible (libcuda.so.1 cannot be loaded)")
    assert "nvidia.com/gpu" in message and "--gpus" in message


def test_device_index_beyond_the_visible_gpus() -> None:
    cli.check_devices(("cuda:0", "cuda:1"), probe=Probe(2))
    with pytest.raises(ConfigError, match=r"^device cuda:2 requested but only 2 CUDA GPU\(s\) are visible"):
        cli.check_devices(("cuda:0", "cuda:2"), probe=Probe(2))
    with pytest.raises(ConfigError, match="expected cuda or cuda:N"):
        cli.check_devices(("cuda:x",), probe=Probe(1))


class FakeDriver:
    """libcuda's three entry points the probe calls, answering with fixed CUresult codes."""

    def __init__(self, init: int, count: int = 0) -> None:
        self.init, self.count = init, count

    def cuInit(self, flags: int) -> int:
        return self.init

    def cuDeviceGetCount(self, out) -> int:
        out._obj.value = self.count
        return 0

    def cuGetErrorName(self, status: int, out) -> int:
        out._obj.value = {100: b"CUDA_ERROR_NO_DEVICE"}.get(status)
        return 0


def test_probe_reads_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver(init=0, count=2))
    assert cli.visible_cuda_devices() == (2, "")
    # Driver present, no device (CUDA_VISIBLE_DEVICES empty, a container started without --gpus on a GPU host).
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver(init=100))
    assert cli.visible_cuda_devices() == (0, "the CUDA driver reports CUDA_ERROR_NO_DEVICE (100)")

    def missing(name: str):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    count, reason = cli.visible_cuda_devices()
    assert count == 0 and "cannot be loaded" in reason


def test_serve_exits_2_with_one_line_when_no_gpu_is_visible(tmp_path: Path) -> None:
    """The entrypoint as the images run it, on a machine without a GPU (skipped where one is visible)."""
    if cli.visible_cuda_devices()[0] > 0:
        pytest.skip("a CUDA GPU is visible here")
    script = Path(sys.executable).with_name("yoloxpai")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "yoloxpai.cli"]
    proc = subprocess.run(
        [*command, "serve", "--device", "cuda:0", "--model-repository", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("yoloxpai serve: device cuda:0 requested but no CUDA GPU is visible")


def test_json_logs_stay_json_when_openvino_loads(tiny_bundle: Path) -> None:
    # OpenVINO forks while it loads; grpc-core's fork handlers used to print a plain-text warning on stderr.
    command = [sys.executable, "-m", "yoloxpai.cli", "serve", "--bundle", str(tiny_bundle), "--backend", "openvino",
               "--http-port", "0", "--grpc-port", "0", "--log-format", "json"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if '" ready: ' in line or "ready:" in line:
                break
    finally:
        proc.terminate()
        lines += proc.communicate(timeout=60)[1].splitlines(keepends=True)
    assert any("ready" in line for line in lines), lines
    for line in lines:
        json.loads(line)  # every stderr line is one JSON object
