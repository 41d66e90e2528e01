"""``yoloxpai export --repository REPO --name M``: each export is the next version directory of the model, written
hidden beside it and renamed into place (nothing half-written is ever visible), its meta recording that version;
a flat bundle already there counts as version 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model.artifacts import load_bundle_meta
from service.repository import VersionPolicy, scan_model
from yoloxpai.cli import main

FLAGS = ["--format", "onnx", "--img-size", "160", "192", "--max-batch", "2", "--no-parity-check"]


def test_exports_become_the_next_versions_of_a_repository_model(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    weights = tiny_bundle.parent / f"{tiny_bundle.name}.safetensors"  # what make_tiny_bundle exported from
    repo = tmp_path / "repo"
    shutil.copytree(tiny_bundle, repo / "shapes")  # an old flat bundle: version 1
    for expected in ("2", "3"):
        assert main(["export", "--weights", str(weights), "--repository", str(repo), "--name", "shapes", *FLAGS]) == 0
        assert f"wrote bundle {repo / 'shapes' / expected}: shapes v{expected}" in capsys.readouterr().out
        assert load_bundle_meta(repo / "shapes" / expected).version == expected  # verified, whole
    assert sorted(p.name for p in (repo / "shapes").iterdir() if p.is_dir()) == ["2", "3"]  # no hidden leftovers
    entry = scan_model(repo, "shapes", VersionPolicy.parse("all"))
    assert [v.version for v in entry.wanted] == ["3", "2", "1"]
    meta = json.loads((repo / "shapes" / "3" / "meta.json").read_text())
    assert meta["name"] == "shapes"


def test_repository_flags_are_checked(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    weights = str(tiny_bundle.parent / f"{tiny_bundle.name}.safetensors")
    assert main(["export", "--weights", weights, "--repository", str(tmp_path), *FLAGS]) == 1
    assert "--repository needs --name" in capsys.readouterr().out
    (tmp_path / "m" / "4").mkdir(parents=True)
    assert main(["export", "--weights", weights, "--repository", str(tmp_path), "--name", "m",
                 "--model-version", "4", *FLAGS]) == 1  # fmt: skip
    assert "never replaced" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", "--weights", weights, "--repository", str(tmp_path), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        main(["export", "--weights", weights])  # one of --out / --repository is required
