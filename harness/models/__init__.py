"""The six architectures of the GradAttn paper and a registry (timm-style).

    build_model(name, in_channels, num_classes, **overrides) -> nn.Module
    MODEL_NAMES, describe(name), is_gradattn(name), count_parameters(model)

Overrides: GradAttn variants take d_model, nhead, dim_feedforward, num_layers, dropout (Table 1
defaults 256, 8, 512, 3, 0.1; the reference No-PE runs on CIFAR-10/PCam/TissueMNIST/PAD-UFES-20
used d_model=32, nhead=16, dim_feedforward=2), and gradattn_rope also rope_base (10000).
se_resnet18 takes reduction (16); cbam_resnet18 reduction (16) and spatial_kernel (7).
resnet18 takes none.

Module classes in each model (what a hook selecting by isinstance on Conv2d / Linear /
nn.TransformerEncoderLayer sees; counts for the default settings):

- resnet18: 20 Conv2d (stem, 16 in blocks, 3 downsample), 1 Linear (fc).
- se_resnet18: resnet18's + 16 Linear (fc1/fc2 of the SE module `layerN.M.attention`).
- cbam_resnet18: resnet18's + 8 Conv2d (7x7 spatial conv) + 16 Linear (shared channel MLP,
  called once per forward on the stacked avg/max descriptors).
- GradAttn backbone (all three variants): `backbone` = headless ResNet, 17 Conv2d, no
  downsample; `token_proj.0..4` (5 Linear); `classifier` (1 Linear).
- gradattn_nope / gradattn_learnable: `encoder.layers.0..2` are harness.models.encoder.TokenEncoderLayer,
  a subclass of nn.TransformerEncoderLayer, each holding nn.MultiheadAttention `self_attn`
  (whose `out_proj` is a Linear subclass that MultiheadAttention calls functionally: hooks on
  it never fire), linear1, linear2. Hooked: 17 + 6 + 3 * (1 layer + 3 Linear) = 35, of which
  32 ever fire (the reference GHS quirk, 32/35 = 0.914).
- gradattn_rope: `encoder.layers.0..2` are harness.models.encoder.RotaryEncoderLayer, NOT an
  nn.TransformerEncoderLayer; each has q_proj, k_proj, v_proj, out_proj (all called as modules),
  linear1, linear2. Hooked: 17 + 6 + 3 * 6 = 41, all fire.
- Learnable PE: parameter `pos_embedding` (1, 5, d_model) ~ N(0, 1).

Initialisation: convs kaiming-normal (fan_out, ReLU), BN weight 1 / bias 0 (torchvision's
ResNet); Linear layers keep PyTorch's default. The encoder's layers are deep copies of one
layer, as nn.TransformerEncoder makes them, so they start identical. RoPE attention applies
dropout to the attention weights, like nn.MultiheadAttention.

GradAttn.forward(x, return_details=False); with True it returns (logits, {"tokens": (B, 5, d),
"attention": [ (B, heads, 5, 5) per layer ]}). The two outputs come from the same code path;
in train mode the encoder's dropout makes them differ between calls, as any forward would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from harness.models.defaults import DEFAULT_ROPE_BASE, TRANSFORMER_DEFAULTS

if TYPE_CHECKING:
    from torch import nn

_INT_OVERRIDES = {
    "d_model",
    "nhead",
    "dim_feedforward",
    "num_layers",
    "reduction",
    "spatial_kernel",
}


@dataclass(frozen=True)
class _Spec:
    label: str  # the paper's name for it, as the report's tables print it
    description: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any]


# Builders import the architectures when called, so the registry (names, labels, defaults)
# loads without torch: the report and the CLI's help only need the labels.
def _resnet18(in_channels: int, num_classes: int) -> nn.Module:
    from harness.models.resnet import ResNet

    return ResNet(in_channels, num_classes)


def _se_resnet18(in_channels: int, num_classes: int, *, reduction: int) -> nn.Module:
    from harness.models.block_attention import SqueezeExcitation
    from harness.models.resnet import ResNet

    return ResNet(
        in_channels, num_classes, attention=partial(SqueezeExcitation, reduction=reduction)
    )


def _cbam_resnet18(
    in_channels: int, num_classes: int, *, reduction: int, spatial_kernel: int
) -> nn.Module:
    from harness.models.block_attention import CBAM
    from harness.models.resnet import ResNet

    factory = partial(CBAM, reduction=reduction, spatial_kernel=spatial_kernel)
    return ResNet(in_channels, num_classes, attention=factory)


def _gradattn(in_channels: int, num_classes: int, **settings: Any) -> nn.Module:
    from harness.models.gradattn import GradAttn

    return GradAttn(in_channels, num_classes, **settings)


_SPECS: dict[str, _Spec] = {
    "resnet18": _Spec(
        "ResNet-18",
        "ResNet-18 (ImageNet stem, 8 BasicBlocks, projection shortcuts); the baseline",
        _resnet18,
        {},
    ),
    "gradattn_nope": _Spec(
        "No PE",
        "GradAttn: skip-free ResNet-18, 5 stage tokens, 3-layer Transformer, no positional encoding",
        partial(_gradattn, positional="none"),
        dict(TRANSFORMER_DEFAULTS),
    ),
    "gradattn_learnable": _Spec(
        "Learnable PE",
        "GradAttn with a learnable (1, 5, d) positional embedding added to the tokens",
        partial(_gradattn, positional="learnable"),
        dict(TRANSFORMER_DEFAULTS),
    ),
    "gradattn_rope": _Spec(
        "RoPE",
        "GradAttn with rotary position embedding (rotate-half, base 10000) on queries and keys",
        partial(_gradattn, positional="rope"),
        {**TRANSFORMER_DEFAULTS, "rope_base": DEFAULT_ROPE_BASE},
    ),
    "se_resnet18": _Spec(
        "SE-ResNet-18",
        "ResNet-18 with squeeze-and-excitation (r=16) on every block's residual branch",
        _se_resnet18,
        {"reduction": 16},
    ),
    "cbam_resnet18": _Spec(
        "CBAM-ResNet-18",
        "ResNet-18 with CBAM (channel r=16, then 7x7 spatial) on every block's residual branch",
        _cbam_resnet18,
        {"reduction": 16, "spatial_kernel": 7},
    ),
}


# The registry is _SPECS above: one entry per model; the names and labels derive from it.
MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)
MODEL_LABELS: dict[str, str] = {name: spec.label for name, spec in _SPECS.items()}


def _spec(name: str) -> _Spec:
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}") from None


def _check_override(name: str, key: str, value: Any) -> None:
    if key in _INT_OVERRIDES:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {key} must be a number, got {value!r}")


def build_model(name: str, in_channels: int, num_classes: int, **overrides: Any) -> nn.Module:
    """Build a freshly initialised model; the caller seeds torch beforehand for reproducibility."""
    spec = _spec(name)
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown:
        valid = ", ".join(spec.defaults) if spec.defaults else "none"
        raise ValueError(
            f"{name} does not take override(s) {', '.join(unknown)}; valid overrides: {valid}"
        )
    for key, value in overrides.items():
        _check_override(name, key, value)
    return spec.builder(in_channels, num_classes, **{**spec.defaults, **overrides})


def describe(name: str) -> str:
    """One-line description of a registered model."""
    return _spec(name).description


def default_overrides(name: str) -> dict[str, Any]:
    """The override keys a model accepts, with their default values."""
    return dict(_spec(name).defaults)


def is_gradattn(name: str) -> bool:
    """Whether the model is one of the three GradAttn variants."""
    _spec(name)
    return name.startswith("gradattn_")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MODEL_LABELS",
    "MODEL_NAMES",
    "build_model",
    "count_parameters",
    "default_overrides",
    "describe",
    "is_gradattn",
]
