"""GradAttn: a skip-free ResNet-18 whose five stage summaries are mixed by a Transformer.

image -> backbone (ResNet-18 without any shortcut) -> feature maps after the max-pool and
after each of the 4 stages -> global average pool -> own Linear(c_i, d_model) per map ->
5 tokens [+ learnable PE] -> post-norm Transformer encoder [RoPE inside attention] ->
mean over tokens -> Linear(d_model, classes)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from harness.models.defaults import DEFAULT_ROPE_BASE
from harness.models.encoder import RotaryEncoderLayer, TokenEncoder, TokenEncoderLayer
from harness.models.resnet import ResNet

PositionalEncoding = Literal["none", "learnable", "rope"]
POSITIONAL_ENCODINGS: tuple[str, ...] = ("none", "learnable", "rope")


class GradAttn(nn.Module):
    """GradAttn classifier; `positional` selects the No-PE, Learnable-PE or RoPE variant."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        positional: PositionalEncoding = "none",
        d_model: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 512,
        num_layers: int = 3,
        dropout: float = 0.1,
        rope_base: float = DEFAULT_ROPE_BASE,
    ) -> None:
        super().__init__()
        if positional not in POSITIONAL_ENCODINGS:
            raise ValueError(
                f"unknown positional encoding {positional!r}; valid: {', '.join(POSITIONAL_ENCODINGS)}"
            )
        if dim_feedforward < 1:
            raise ValueError(f"dim_feedforward must be a positive integer, got {dim_feedforward}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.positional = positional
        self.backbone = ResNet(in_channels, num_classes=None, skip=False)
        channels = self.backbone.feature_channels
        self.num_tokens = len(channels)
        self.token_proj = nn.ModuleList(nn.Linear(c, d_model) for c in channels)
        self.pos_embedding: nn.Parameter | None = None
        if positional == "learnable":
            self.pos_embedding = nn.Parameter(torch.randn(1, self.num_tokens, d_model))
        if positional == "rope":
            layer: nn.Module = RotaryEncoderLayer(
                d_model,
                nhead,
                dim_feedforward,
                dropout,
                num_positions=self.num_tokens,
                rope_base=rope_base,
            )
        else:
            layer = TokenEncoderLayer(d_model, nhead, dim_feedforward, dropout)
        self.encoder = TokenEncoder(layer, num_layers)
        self.classifier = nn.Linear(d_model, num_classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 5, d_model) token sequence entering the encoder (learnable PE included)."""
        maps = self.backbone.feature_maps(x)
        tokens = torch.stack(
            [proj(fmap.mean(dim=(2, 3))) for proj, fmap in zip(self.token_proj, maps, strict=True)],
            dim=1,
        )
        if self.pos_embedding is not None:
            tokens = tokens + self.pos_embedding
        return tokens

    def forward(
        self, x: torch.Tensor, return_details: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, object]]:
        """Logits; with `return_details`, (logits, {"tokens", "attention"}) where "attention"
        holds one (B, heads, 5, 5) tensor of softmax weights per encoder layer."""
        tokens = self.tokens(x)
        encoded, attention = self.encoder(tokens, return_attention=return_details)
        logits = self.classifier(encoded.mean(dim=1))
        if return_details:
            return logits, {"tokens": tokens, "attention": attention}
        return logits
