"""``yoloxpai serve`` flags are generated from Settings: every field has a flag, flags beat YOLOXPAI_* env."""

from __future__ import annotations

import argparse

import pytest

from service.cli import add_arguments, flag_name, settings_from_args
from service.settings import Settings


def parse(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(argv))


def test_every_field_has_a_flag():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {opt for action in parser._actions for opt in action.option_strings}
    for field in Settings.model_fields:
        assert flag_name(field) in flags, field
    assert flag_name("bundles") == "--bundle" and flag_name("api_keys") == "--api-key"
    assert flag_name("max_queue_delay_ms") == "--max-queue-delay-ms"


def test_flags_env_and_defaults(monkeypatch):
    monkeypatch.setenv("YOLOXPAI_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("YOLOXPAI_QUEUE_CAPACITY", "7")
    monkeypatch.setenv("YOLOXPAI_API_KEYS", "a, b")
    monkeypatch.setenv("YOLOXPAI_BUNDLES", "x=/m/x,/m/y")
    s = parse(["--max-batch-size", "2", "--no-eager-dispatch", "--bundle", "one=/a", "--bundle", "/b"])
    assert s.max_batch_size == 2  # flag wins
    assert s.queue_capacity == 7  # env
    assert s.api_keys == ["a", "b"]
    assert s.bundles == ["one=/a", "/b"]  # the repeated flag replaces the env list
    assert s.eager_dispatch is False
    assert s.http_port == 8000 and s.grpc_port == 8001  # defaults
    s = parse(["--api-key", "k1", "--api-key", "k2", "--device", "cuda:0,cuda:1", "--backend", "openvino"])
    assert s.api_keys == ["k1", "k2"] and s.devices == ("cuda:0", "cuda:1") and s.backend == "openvino"


def test_invalid_values_are_refused():
    with pytest.raises(SystemExit):
        parse(["--backend", "tensorflow"])
    with pytest.raises(Exception, match="max_batch_size"):
        parse(["--max-batch-size", "0"])
    with pytest.raises(Exception, match="tls"):
        parse(["--tls-cert-file", "/c.pem"])


def test_bundle_specs(tmp_path):
    from service.bundles import ConfigError, bundle_specs, parse_bundle

    assert parse_bundle("yolo=/m/1").name == "yolo"
    assert parse_bundle("/m/a=b").name is None  # a path that contains '='
    (tmp_path / "repo" / "b").mkdir(parents=True)
    (tmp_path / "repo" / "a").mkdir()
    (tmp_path / "one").mkdir()
    specs = bundle_specs(Settings(bundles=[f"first={tmp_path / 'one'}"], model_repository=tmp_path / "repo"))
    assert [(s.name, s.path.name) for s in specs] == [("first", "one")]  # the repository is service.repository's
    assert bundle_specs(Settings(model_repository=tmp_path / "repo")) == []  # no embedded default beside it
    with pytest.raises(ConfigError, match="not a directory"):
        bundle_specs(Settings(model_repository=tmp_path / "missing"))
    with pytest.raises(ConfigError, match="does not exist"):
        bundle_specs(Settings(bundles=[str(tmp_path / "missing")]))


def test_without_bundles_the_embedded_default_is_served_or_named_missing(tmp_path, monkeypatch):
    from service import bundles

    monkeypatch.setattr(bundles, "default_bundle_dir", lambda: tmp_path / "default_bundle")
    with pytest.raises(bundles.ConfigError, match="embedded default model is missing"):
        bundles.bundle_specs(Settings())
    (tmp_path / "default_bundle").mkdir()
    assert [s.path for s in bundles.bundle_specs(Settings())] == [tmp_path / "default_bundle"]
