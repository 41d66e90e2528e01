"""The model repository on disk: its models, their versions, each model's version policy, and a fingerprint of each
version's files. Pure scanning: it loads nothing and imports nothing from the engine.

Layout (Triton's): ``REPO/<model>/<version>/`` holds one bundle per version, versions numbered 1, 2, ... (names
that are not positive integers without leading zeros are ignored, so hidden exports in progress are never seen);
a bundle directly in ``REPO/<model>/`` is version 1 (``model.artifacts.repository_versions``, through
``service.bundles``). Which versions are served is the model's *version policy*, Triton's three:

- ``latest:N`` — the N newest (the default, N = 1);
- ``all`` — every version;
- ``specific:1,3`` — exactly these.

The server-wide default is ``--version-policy``; a model may set its own in ``REPO/<model>/config.json``, a JSON
object with one key, ``version_policy``, in the shape of Triton's JSON model configuration::

    {"version_policy": {"latest": {"num_versions": 2}}}
    {"version_policy": {"all": {}}}
    {"version_policy": {"specific": {"versions": [1, 3]}}}

Anything else in that file is an error reported for the model (its served versions stay as they are).
A version's *fingerprint* is the name, size and modification time of each of its files: polling reloads a version
whose fingerprint changed. With ``latest:N``, the older versions are the *fallback*: when none of the N newest can
be loaded and nothing of the model serves yet (a corrupt newest version on a fresh start), the newest older version
that loads serves instead, so one bad export cannot take a model down.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from service.bundles import repository_versions

POLICY_FILE = "config.json"
Fingerprint = tuple[tuple[str, int, int], ...]


class PolicyError(ValueError):
    """A version policy that cannot be read (the message says where and why)."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions are served (Triton's ``version_policy``)."""

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest:N``, ``all`` or ``specific:V[,V...]`` (the ``--version-policy`` spelling)."""
        kind, _, rest = text.strip().partition(":")
        try:
            if kind == "all" and not rest:
                return cls("all")
            if kind == "latest":
                return cls._checked("latest", num_versions=int(rest))
            if kind == "specific":
                return cls._checked("specific", versions=tuple(int(v) for v in rest.split(",")))
        except ValueError:
            pass
        raise PolicyError(f"version policy {text!r}: expected latest:N, all or specific:V[,V...]")

    @classmethod
    def from_config(cls, policy: Any, where: str) -> VersionPolicy:
        """Triton's JSON shape: ``{"latest": {"num_versions": N}}``, ``{"all": {}}`` or
        ``{"specific": {"versions": [...]}}``."""
        if not isinstance(policy, dict) or len(policy) != 1:
            raise PolicyError(f"{where}: version_policy must be an object with one key: latest, all or specific")
        ((kind, body),) = policy.items()
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise PolicyError(f"{where}: version_policy.{kind} must be an object")
        if kind == "all" and not body:
            return cls("all")
        if kind == "latest" and set(body) <= {"num_versions"}:
            return cls._checked("latest", num_versions=body.get("num_versions", 1), where=where)
        if kind == "specific" and set(body) == {"versions"} and isinstance(body["versions"], list):
            return cls._checked("specific", versions=tuple(body["versions"]), where=where)
        raise PolicyError(f"{where}: unknown version_policy {json.dumps(policy)}")

    @classmethod
    def _checked(cls, kind: Literal["latest", "specific"], *, where: str = "", **values: Any) -> VersionPolicy:
        numbers = values.get("versions", ()) or (values.get("num_versions"),)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in numbers):
            raise PolicyError(f"{where or 'version policy'}: {kind} needs positive integers, got {values}")
        return cls(kind, **values)

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve among ``available``, newest first."""
        newest_first = sorted(available, reverse=True)
        if self.kind == "latest":
            return newest_first[: self.num_versions]
        if self.kind == "specific":
            return [v for v in newest_first if v in self.versions]
        return newest_first

    def describe(self) -> str:
        """The ``--version-policy`` spelling."""
        if self.kind == "latest":
            return f"latest:{self.num_versions}"
        if self.kind == "specific":
            return "specific:" + ",".join(str(v) for v in self.versions)
        return "all"


@dataclass(frozen=True)
class VersionDir:
    """One version of a model: its directory and the fingerprint of its files."""

    version: str
    path: Path
    fingerprint: Fingerprint


@dataclass(frozen=True)
class ModelEntry:
    """One model of the repository as scanned: the versions its policy selects (newest first)."""

    name: str
    path: Path
    policy: VersionPolicy
    wanted: tuple[VersionDir, ...] = ()
    missing: tuple[str, ...] = ()  # versions a specific policy names that do not exist
    error: str = ""  # the model's config.json is unreadable: nothing of it is changed
    found: tuple[str, ...] = field(default=(), compare=False)  # every version on disk, newest first
    fallback: tuple[VersionDir, ...] = field(default=(), compare=False)  # latest:N: the older ones, newest first


def fingerprint(version_dir: Path) -> Fingerprint:
    """Name, size and modification time (ns) of each file directly in ``version_dir`` (a bundle is flat)."""
    rows = []
    with os.scandir(version_dir) as entries:
        for entry in entries:
            if entry.is_file() and not entry.name.startswith("."):
                stat = entry.stat()
                rows.append((entry.name, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(rows))


def read_policy(model_dir: Path, default: VersionPolicy) -> VersionPolicy:
    """The model's policy from ``config.json``, else ``default``; raises ``PolicyError``."""
    path = model_dir / POLICY_FILE
    if not path.is_file():
        return default
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"{path}: unreadable JSON: {exc}") from exc
    if not isinstance(config, dict) or set(config) - {"version_policy"}:
        raise PolicyError(f'{path}: expected {{"version_policy": {{...}}}} and nothing else')
    return VersionPolicy.from_config(config.get("version_policy", {"latest": {"num_versions": 1}}), str(path))


def scan_model(repository: Path, name: str, default: VersionPolicy) -> ModelEntry | None:
    """One model of the repository (``None`` when its directory is gone)."""
    path = repository / name
    try:
        if not path.is_dir():
            return None
        versions = repository_versions(path)
        policy = read_policy(path, default)
        selected = policy.select(list(versions))
        wanted = tuple(VersionDir(str(v), versions[v], fingerprint(versions[v])) for v in selected)
        older = [v for v in sorted(versions, reverse=True) if v not in selected] if policy.kind == "latest" else []
        fallback = tuple(VersionDir(str(v), versions[v], fingerprint(versions[v])) for v in older)
    except PolicyError as exc:
        return ModelEntry(name, path, default, error=str(exc))
    except OSError as exc:  # vanished or unreadable while scanning: report it, change nothing
        return ModelEntry(name, path, default, error=f"cannot read {path}: {exc}")
    missing = tuple(str(v) for v in policy.versions if v not in versions) if policy.kind == "specific" else ()
    found = tuple(str(v) for v in sorted(versions, reverse=True))
    return ModelEntry(name, path, policy, wanted, missing, found=found, fallback=fallback)


def model_names(repository: Path) -> list[str]:
    """The model directories of the repository, sorted (hidden ones are not models)."""
    return sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_repository(repository: Path, default: VersionPolicy) -> dict[str, ModelEntry]:
    """Every model of the repository, by name."""
    entries = {}
    for name in model_names(repository):
        entry = scan_model(repository, name, default)
        if entry is not None:
            entries[name] = entry
    return entries
