"""Model configuration: the ``YoloxConfig`` frozen dataclass, input conventions and the preset table.

A preset is a dict entry; a variant is ``dataclasses.replace(preset, ...)``. The input convention (channel order,
mean/std, pad value, letterbox placement) travels with the config so preprocessing, export meta and serving never
have to guess it. Pure stdlib: importable without torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Backbone = Literal["cspdarknet", "repvgg"]
Neck = Literal["pafpn", "gsconv"]
NeckMode = Literal["all", "part"]
Fusion = Literal["none", "asff", "asff_sim"]
HeadType = Literal["yolox", "tood"]
ConvType = Literal["conv", "dwconv", "repconv"]
IouLoss = Literal["iou", "giou", "giou-easycv", "siou"]
ToodNorm = Literal["gn", "bn", "none"]
# ``model.loss.iou.IOU_LOSSES`` keys, repeated here so configs and the CLI stay importable without torch.
IOU_LOSS_NAMES = ("iou", "giou", "giou-easycv", "siou")


@dataclass(frozen=True)
class InputConvention:
    """How a uint8 image becomes the network input.

    ``channel_order`` is the order the network expects; ``mean``/``std`` are in that order and applied after
    letterboxing (pad first, then normalise, as both references do). Placement is always top-left.
    """

    name: str
    channel_order: Literal["bgr", "rgb"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad_value: float = 114.0

    def to_dict(self) -> dict:
        """JSON-friendly form (for checkpoints and bundle meta)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputConvention:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            channel_order=data["channel_order"],
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            pad_value=float(data.get("pad_value", 114.0)),
        )


# Megvii YOLOX (weights since 2021-08-19): BGR, 0..255, no normalisation.
MEGVII = InputConvention("megvii", "bgr", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
# EasyCV YOLOX-PAI: RGB, ImageNet mean/std in 0..255 units.
EASYCV = InputConvention("easycv", "rgb", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
CONVENTIONS = {c.name: c for c in (MEGVII, EASYCV)}


@dataclass(frozen=True)
class YoloxConfig:
    """Everything that defines a YOLOX / YOLOX-PAI network and its input.

    Args:
        depth, width: the YOLOX multipliers (CSP repeats, channels).
        depthwise: Megvii nano-style depthwise convs in backbone and neck.
        backbone: ``cspdarknet`` (Megvii) or ``repvgg`` (EasyCV RepVGGYOLOX; always ReLU, as the reference).
        neck, neck_mode: ``pafpn`` or ``gsconv``; ``all`` replaces CSP layers by VoVGSCSP, ``part`` keeps them.
            GSConv and VoVGSCSP are always SiLU whatever ``act`` says (EasyCV builds them without an act).
        fusion: ASFF after the PAN (``asff`` learned resizers, ``asff_sim`` parameter-free ones).
        head: ``yolox`` decoupled head or ``tood`` (task-decomposition head with ``tood_stacked_convs``).
        tood_norm, tood_gn_groups: the norm of TOOD's ``ConvModule`` layers (EasyCV ``norm_cfg``, default
            GroupNorm with 32 groups): ``gn``, ``bn`` (YOLOX's eps/momentum) or ``none`` (conv with a bias, which
            the reduction conv then never applies: EasyCV's dynamic conv uses only its weight).
        head_conv_type: the head's 3x3 convs: ``conv``, ``dwconv`` or ``repconv`` (RepVGG block).
        input_hw: default (height, width), multiples of 32.
        prior_prob: cls/obj bias prior at init, ``-log((1 - p) / p)``; ``None`` keeps PyTorch's default bias.
        iou_loss: the regression loss the reference recipe uses for this preset (training only).

    Initialisation per family (what each reference's training entry point effectively runs):
    - Megvii presets: PyTorch defaults everywhere, then cls/obj biases from ``prior_prob=0.01`` (-4.595).
    - YOLOX-PAI presets: ``prior_prob=None``: EasyCV defines ``initialize_biases`` but only YOLOX-Edge calls it,
      so the biases keep PyTorch's default. TOOD (either family: it exists only in EasyCV) initialises its
      ``ConvModule`` convs (``inter_convs``, ``reduction_conv``) as mmcv does, Kaiming-normal (fan_out, ReLU), bias
      0, norm weight 1 / bias 0, and its layer-attention convs keep PyTorch's defaults: TOOD's own
      ``init_weights`` (normal 0.01 / 0.001) is never called by EasyCV.
    - Every BatchNorm: eps 1e-3, momentum 0.03 (both references' ``init_yolo``).
    """

    name: str = "custom"
    num_classes: int = 80
    depth: float = 0.33
    width: float = 0.50
    act: str = "silu"
    depthwise: bool = False
    backbone: Backbone = "cspdarknet"
    neck: Neck = "pafpn"
    neck_mode: NeckMode = "all"
    fusion: Fusion = "none"
    asff_channel: int = 2
    head: HeadType = "yolox"
    head_conv_type: ConvType = "conv"
    tood_stacked_convs: int = 3
    tood_la_down_rate: int = 32
    tood_norm: ToodNorm = "gn"
    tood_gn_groups: int = 32
    strides: tuple[int, int, int] = (8, 16, 32)
    in_channels: tuple[int, int, int] = (256, 512, 1024)
    input_hw: tuple[int, int] = (640, 640)
    convention: InputConvention = field(default=MEGVII)
    prior_prob: float | None = 0.01
    iou_loss: IouLoss = "iou"

    def __post_init__(self) -> None:
        h, w = self.input_hw
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ValueError(f"input_hw must be positive multiples of 32, got {self.input_hw}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.prior_prob is not None and not 0.0 < self.prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1) or None, got {self.prior_prob}")
        if self.tood_gn_groups < 1:
            raise ValueError(f"tood_gn_groups must be >= 1, got {self.tood_gn_groups}")
        checks = {
            "backbone": ("cspdarknet", "repvgg"),
            "neck": ("pafpn", "gsconv"),
            "neck_mode": ("all", "part"),
            "fusion": ("none", "asff", "asff_sim"),
            "head": ("yolox", "tood"),
            "head_conv_type": ("conv", "dwconv", "repconv"),
            "iou_loss": IOU_LOSS_NAMES,
            "tood_norm": ("gn", "bn", "none"),
            "act": ("silu", "relu", "lrelu"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """JSON-friendly form, stored in checkpoints and bundle meta."""
        data = dataclasses.asdict(self)
        data["convention"] = self.convention.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> YoloxConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error (a newer format)."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown YoloxConfig keys {sorted(unknown)}")
        if "convention" in data and isinstance(data["convention"], dict):
            data["convention"] = InputConvention.from_dict(data["convention"])
        for key in ("strides", "in_channels", "input_hw"):
            if key in data:
                data[key] = tuple(int(v) for v in data[key])
        return cls(**data)


_S = YoloxConfig(name="yolox-s", depth=0.33, width=0.50)
# EasyCV's released configs: GIoU in EasyCV's form and no prior-probability bias (see YoloxConfig).
_PAI_S = dataclasses.replace(
    _S, name="yolox-pai-s", backbone="repvgg", convention=EASYCV, iou_loss="giou-easycv", prior_prob=None
)

VARIANTS: dict[str, YoloxConfig] = {
    "yolox-nano": YoloxConfig(
        name="yolox-nano", depth=0.33, width=0.25, depthwise=True, head_conv_type="dwconv", input_hw=(416, 416)
    ),
    "yolox-tiny": YoloxConfig(name="yolox-tiny", depth=0.33, width=0.375, input_hw=(416, 416)),
    "yolox-s": _S,
    "yolox-m": YoloxConfig(name="yolox-m", depth=0.67, width=0.75),
    "yolox-l": YoloxConfig(name="yolox-l", depth=1.0, width=1.0),
    "yolox-x": YoloxConfig(name="yolox-x", depth=1.33, width=1.25),
    "yolox-pai-s": _PAI_S,
    "yolox-pai-s-asff": dataclasses.replace(_PAI_S, name="yolox-pai-s-asff", fusion="asff"),
    "yolox-pai-s-asff-tood3": dataclasses.replace(
        _PAI_S, name="yolox-pai-s-asff-tood3", fusion="asff", head="tood", tood_stacked_convs=3
    ),
}


def get_config(name: str, **overrides) -> YoloxConfig:
    """Return preset ``name`` with ``overrides`` applied (any ``YoloxConfig`` field)."""
    if name not in VARIANTS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(VARIANTS)}")
    cfg = VARIANTS[name]
    if "convention" in overrides and isinstance(overrides["convention"], str):
        overrides["convention"] = CONVENTIONS[overrides["convention"]]
    if "input_hw" in overrides:
        overrides["input_hw"] = tuple(int(v) for v in overrides["input_hw"])
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
