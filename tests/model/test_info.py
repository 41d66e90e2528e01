"""``yoloxpai info`` reproduces the published parameter and GFLOPs figures."""

from __future__ import annotations

import subprocess
import sys

import pytest

from model.cli.info import format_gflops
from model.complexity import measure
from model.yolox import build_model

# preset: (params M training form, params M RepVGG-fused, GFLOPs at the preset's input size or None)
PUBLISHED = {
    "yolox-nano": ("0.91", "0.91", "1.08"),
    "yolox-tiny": ("5.06", "5.06", "6.45"),
    "yolox-s": ("8.97", "8.97", "26.8"),
    "yolox-m": ("25.33", "25.33", "73.8"),
    "yolox-l": ("54.21", "54.21", "155.6"),
    "yolox-x": ("99.07", "99.07", "281.9"),
    "yolox-pai-s": ("17.09", "15.91", None),
    "yolox-pai-s-asff": ("22.49", "21.31", None),
    "yolox-pai-s-asff-tood3": ("23.24", "22.06", None),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_figures(name: str) -> None:
    params, fused, gflops = PUBLISHED[name]
    model = build_model(name)
    c = measure(model, model.cfg.input_hw)
    assert f"{c.params_m:.2f}" == params
    assert f"{c.params_repvgg_fused_m:.2f}" == fused
    if gflops is not None:
        assert format_gflops(c.gflops) == gflops


def test_cli_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "yoloxpai.cli", "info", "yolox-nano", "--input-size", "416", "416"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("yolox-nano"))
    assert "0.91" in row and "1.08" in row and "416x416" in row
    bad = subprocess.run([sys.executable, "-m", "yoloxpai.cli", "info", "yolox-q"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown preset" in bad.stdout
