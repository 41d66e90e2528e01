"""A request's ``DetectOptions`` resolved against one served model, in the predictor's terms.

The bounds (threshold in [the bundle's baked minimum, 1], K in [1, the bundle's K]) are the predictor's own
(``Predictor.resolve_options``); this module only checks the wire types and translates its ``ValueError`` into
``InvalidOption``, and maps class names to ids. Imports nothing from ``model``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.engine import DetectOptions
from service.errors import InvalidOption
from service.predictor_api import Predictor


@dataclass(frozen=True)
class ResolvedOptions:
    """Options validated against one model, in the predictor's terms."""

    score_threshold: float | None = None
    max_detections: int | None = None
    class_ids: tuple[int, ...] | None = None


class OptionResolver:
    """Validates and translates options for the model ``name`` served by ``predictor``."""

    def __init__(self, name: str, predictor: Predictor, class_names: tuple[str, ...]) -> None:
        self._name = name
        self._predictor = predictor
        self._class_names = class_names
        self._class_index = {c: i for i, c in enumerate(class_names)}

    def resolve(self, options: DetectOptions | None) -> ResolvedOptions:
        """``InvalidOption`` with a precise message for a wrong type, an out-of-range value or an unknown class."""
        if options is None:
            return ResolvedOptions()
        threshold, limit = options.score_threshold, options.max_detections
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
                raise InvalidOption(f"score_threshold must be a number, got {threshold!r}")
            threshold = float(threshold)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise InvalidOption(f"max_detections must be an integer, got {limit!r}")
        if threshold is not None or limit is not None:
            try:
                self._predictor.resolve_options(threshold, limit)
            except ValueError as exc:
                raise InvalidOption(f"{exc} (model {self._name!r})") from None
        class_ids = None
        if options.classes:
            class_ids = tuple(sorted({self._class_id(c) for c in options.classes}))
        return ResolvedOptions(threshold, limit, class_ids)

    def _class_id(self, value: int | str) -> int:
        if isinstance(value, str):
            if value in self._class_index:
                return self._class_index[value]
            if value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise InvalidOption(f"unknown class {value!r} for model {self._name!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidOption(f"a class must be an id or a name, got {value!r}")
        if not 0 <= value < len(self._class_names):
            raise InvalidOption(f"class id {value} out of range [0, {len(self._class_names)})")
        return value
