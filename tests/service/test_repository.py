"""The model repository on disk (``service.repository``): Triton's version directories, a flat bundle as version 1,
version policies from the flag or ``config.json``, fingerprints that change with the files; and the export side
(``model.export.bundle.repository_target``: the next version, never an existing one)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from model.artifacts import next_repository_version, repository_versions
from service.repository import PolicyError, VersionPolicy, scan_model, scan_repository

LATEST = VersionPolicy()


def make_version(model_dir: Path, version: str, payload: bytes = b"x") -> Path:
    path = model_dir / version
    path.mkdir(parents=True)
    (path / "meta.json").write_text("{}")
    (path / "model.onnx").write_bytes(payload)
    return path


def test_version_directories_follow_triton(tmp_path):
    model = tmp_path / "m"
    for name in ("1", "3", "12"):
        make_version(model, name)
    for ignored in ("0", "007", "v2", ".4.tmp123", "²"):
        (model / ignored).mkdir()
    (model / "5").write_text("a file, not a directory")
    assert list(repository_versions(model)) == [1, 3, 12]
    assert next_repository_version(model) == 13
    assert next_repository_version(tmp_path / "new") == 1


def test_a_flat_bundle_is_version_one_unless_a_1_directory_exists(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "meta.json").write_text("{}")
    assert repository_versions(flat) == {1: flat}
    assert next_repository_version(flat) == 2  # the next export goes beside it as 2/
    make_version(flat, "2")
    assert repository_versions(flat) == {1: flat, 2: flat / "2"}
    make_version(flat, "1")
    assert repository_versions(flat)[1] == flat / "1"


@pytest.mark.parametrize(
    ("text", "available", "served"),
    [
        ("latest:1", [1, 2, 3], [3]),
        ("latest:2", [3, 1, 2], [3, 2]),
        ("latest:5", [1, 2], [2, 1]),
        ("all", [2, 1], [2, 1]),
        ("specific:1,3", [1, 2, 3], [3, 1]),
        ("specific:4", [1, 2], []),
    ],
)
def test_version_policies_select_newest_first(text, available, served):
    policy = VersionPolicy.parse(text)
    assert policy.select(available) == served
    assert policy.describe() == text


@pytest.mark.parametrize("text", ["latest", "latest:0", "latest:x", "all:2", "specific:", "specific:1,a", "newest"])
def test_bad_policy_spellings_are_refused(text):
    with pytest.raises(PolicyError, match="version policy"):
        VersionPolicy.parse(text)


def test_config_json_sets_the_policy_in_tritons_shape(tmp_path):
    model = tmp_path / "repo" / "m"
    for name in ("1", "2", "3"):
        make_version(model, name)
    entry = scan_model(tmp_path / "repo", "m", LATEST)
    assert [v.version for v in entry.wanted] == ["3"] and entry.found == ("3", "2", "1")
    (model / "config.json").write_text(json.dumps({"version_policy": {"latest": {"num_versions": 2}}}))
    assert [v.version for v in scan_model(tmp_path / "repo", "m", LATEST).wanted] == ["3", "2"]
    (model / "config.json").write_text(json.dumps({"version_policy": {"specific": {"versions": [1, 4]}}}))
    entry = scan_model(tmp_path / "repo", "m", LATEST)
    assert [v.version for v in entry.wanted] == ["1"] and entry.missing == ("4",)
    (model / "config.json").write_text(json.dumps({"version_policy": {"all": {}}}))
    assert len(scan_model(tmp_path / "repo", "m", LATEST).wanted) == 3


@pytest.mark.parametrize(
    "config",
    [
        "not json",
        "[]",
        '{"version_policy": {"latest": {"num_versions": 0}}}',
        '{"version_policy": {"specific": {"versions": []}}}',
        '{"version_policy": {"newest": {}}}',
        '{"version_policy": {"latest": {}, "all": {}}}',
        '{"max_batch_size": 8}',
    ],
)
def test_a_bad_config_json_is_an_error_of_its_model_only(tmp_path, config):
    make_version(tmp_path / "bad", "1")
    make_version(tmp_path / "good", "1")
    (tmp_path / "bad" / "config.json").write_text(config)
    entries = scan_repository(tmp_path, LATEST)
    assert "config.json" in entries["bad"].error and entries["bad"].wanted == ()
    assert entries["good"].error == "" and [v.version for v in entries["good"].wanted] == ["1"]


def test_the_fingerprint_changes_with_the_files_and_hidden_models_are_skipped(tmp_path):
    version = make_version(tmp_path / "m", "1")
    (tmp_path / ".staging").mkdir()
    (tmp_path / "README").write_text("not a model")
    assert list(scan_repository(tmp_path, LATEST)) == ["m"]
    before = scan_model(tmp_path, "m", LATEST).wanted[0].fingerprint
    assert scan_model(tmp_path, "m", LATEST).wanted[0].fingerprint == before
    (version / "model.onnx").write_bytes(b"other weights")
    assert scan_model(tmp_path, "m", LATEST).wanted[0].fingerprint != before
    assert scan_model(tmp_path, "gone", LATEST) is None


def test_export_targets_the_next_version_and_never_an_existing_one(tmp_path):
    from model.export.bundle import fsync_tree, repository_target

    assert repository_target(tmp_path, "m") == (tmp_path / "m" / "1", 1)
    make_version(tmp_path / "m", "1")
    make_version(tmp_path / "m", "4")
    assert repository_target(tmp_path, "m") == (tmp_path / "m" / "5", 5)
    assert repository_target(tmp_path, "m", 2) == (tmp_path / "m" / "2", 2)
    with pytest.raises(FileExistsError, match="never replaced"):
        repository_target(tmp_path, "m", 4)
    with pytest.raises(ValueError, match="positive"):
        repository_target(tmp_path, "m", 0)
    fsync_tree(tmp_path / "m" / "4")  # files and directory entries flush without error
    assert os.listdir(tmp_path / "m" / "4")
