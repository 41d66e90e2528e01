"""Which bundles to serve under which names, and loading their predictors.

Fixed bundles: ``--bundle PATH`` / ``--bundle NAME=PATH`` (repeatable); with neither these nor
``--model-repository``, the embedded default model (``model.artifacts.default_bundle_dir()``). The repository's
models and versions are ``service.repository``'s (its version-directory rule is ``repository_versions`` here).
The only place in ``service`` that imports ``model`` (the bundle API: ``model.artifacts`` and
``model.predictor``), and it does so lazily so ``--help`` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.predictor_api import Predictor
from service.settings import Settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# (path, backend, device, threads, spin) -> a Predictor (``model.predictor.Predictor`` or a test double).
PredictorLoader = Callable[[Path, str, str, "int | None", bool], Predictor]


class ConfigError(Exception):
    """The bundle configuration cannot be served (missing default model, duplicate names, bad bundle)."""


@dataclass(frozen=True)
class BundleSpec:
    """One bundle directory and the name to serve it under (``None`` = the name in its meta), at ``version``
    (``None`` = ``model_version``'s choice; a repository gives its version directory's number)."""

    path: Path
    name: str | None = None
    version: str | None = None


def parse_bundle(entry: str) -> BundleSpec:
    """``PATH`` or ``NAME=PATH`` -> spec (a path that merely contains ``=`` stays a path)."""
    name, sep, path = entry.partition("=")
    if sep and _NAME.match(name) and path:
        return BundleSpec(Path(path).expanduser(), name)
    return BundleSpec(Path(entry).expanduser())


def default_bundle_dir() -> Path:
    """The embedded default model's directory (from the model package)."""
    from model.artifacts import default_bundle_dir as model_default

    return Path(model_default())


def bundle_specs(settings: Settings) -> list[BundleSpec]:
    """The fixed bundles the settings ask for, in serving order (before the repository's models); the embedded
    default model when neither ``--bundle`` nor ``--model-repository`` is given."""
    specs = [parse_bundle(entry) for entry in settings.bundles]
    if settings.model_repository is not None and not settings.model_repository.is_dir():
        raise ConfigError(f"model repository {settings.model_repository} is not a directory")
    for spec in specs:
        if not spec.path.is_dir():
            raise ConfigError(f"bundle directory {spec.path} does not exist")
    if specs or settings.model_repository is not None:
        return specs
    path = default_bundle_dir()
    if not path.is_dir():
        raise ConfigError(
            f"no --bundle given and the embedded default model is missing ({path}); "
            "export one with `yoloxpai export` and pass --bundle DIR"
        )
    return [BundleSpec(path)]


def load_predictor(path: Path, backend: str, device: str, threads: int | None, spin: bool) -> Predictor:
    """Load one predictor instance; bundle problems become ``ConfigError`` naming the bundle.

    ``spin``: the runtime's intra-op threads spin-wait between parallel sections (ONNX Runtime).
    """
    from model.artifacts import BundleError
    from model.predictor import Predictor

    try:
        return Predictor.from_bundle(path, backend=backend, device=device, threads=threads, spin=spin)
    except (BundleError, FileNotFoundError) as exc:
        raise ConfigError(f"cannot load bundle {path}: {exc}") from exc
    # An optional runtime missing from this image, or one that cannot start here (no CUDA device, no CUDA provider):
    # one line that says so, instead of a traceback the orchestrator restarts into again and again.
    except (ImportError, RuntimeError) as exc:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"cannot load bundle {path} with backend {backend} on {device}: {cause}") from exc


def backend_candidates(path: Path, device: str, precision: str) -> list[tuple[str, str]] | None:
    """``(backend, precision)`` pairs ``--backend auto`` may serve (``model.predictor.backend_candidates``), or
    None when ``path`` holds no readable bundle (the loader then reports it, or a test double needs none)."""
    from model.artifacts import BundleError, load_bundle_meta
    from model.predictor import backend_candidates as model_candidates

    try:
        return model_candidates(load_bundle_meta(path, verify=False), device, precision)
    except BundleError:
        return None


def model_version(meta: Any, path: Path) -> str:
    """The version a bundle is served as: its meta's ``version``, a numeric directory name, or "1"."""
    version = getattr(meta, "version", None)
    if version not in (None, ""):
        return str(version)
    return path.name if path.name.isdigit() else "1"


def repository_versions(model_dir: Path) -> dict[int, Path]:
    """A repository model's version directories (``model.artifacts.repository_versions``: Triton's numbering, a
    flat bundle is version 1)."""
    from model.artifacts import repository_versions as model_versions

    return model_versions(model_dir)
