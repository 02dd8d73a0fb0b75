"""GradAttn's token encoder: post-norm Transformer encoder layers over the five stage tokens.

Two layer classes share one forward (`_PostNormForward`):

- `TokenEncoderLayer` IS an nn.TransformerEncoderLayer (subclass; same submodules, same
  state_dict keys, nn.MultiheadAttention inside). Used by the No-PE and Learnable-PE variants,
  as in the authors' code. Its forward is the post-norm path of nn.TransformerEncoderLayer
  written out (no fused inference fast path) so that attention weights can be requested;
  numerically it equals nn.TransformerEncoderLayer (tests compare them).
- `RotaryEncoderLayer` is a plain nn.Module with the same layout but a RotarySelfAttention.
  It is deliberately NOT an nn.TransformerEncoderLayer: the reference RoPE layer is custom,
  and gradient-health hooks select modules by isinstance.

Attention weights: set `layer.keep_attention = True` before a forward; the layer then computes
the softmax weights (B, heads, T, T) and leaves them in `layer.attention_weights`. The output
goes through the same code either way.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.rope import DEFAULT_ROPE_BASE, RotarySelfAttention


class _PostNormForward:
    """x = norm1(x + dropout1(attn(x))); x = norm2(x + dropout2(ff(x))) -- PyTorch's post-norm."""

    keep_attention: bool
    attention_weights: torch.Tensor | None
    norm1: nn.LayerNorm
    norm2: nn.LayerNorm
    dropout1: nn.Dropout

    def _self_attention(
        self, x: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    # _ff_block comes from nn.TransformerEncoderLayer or is defined alongside it; a stub
    # here would shadow the inherited one in the method resolution order.

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if src_mask is not None or src_key_padding_mask is not None or is_causal:
            raise ValueError(
                "GradAttn encoder layers attend over all tokens; masks are not supported"
            )
        attended, weights = self._self_attention(src, self.keep_attention)
        self.attention_weights = weights
        x = self.norm1(src + self.dropout1(attended))
        return self.norm2(x + self._ff_block(x))  # type: ignore[attr-defined]


class TokenEncoderLayer(_PostNormForward, nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer (post-norm, ReLU, batch_first) that can report its weights."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        _check_heads(d_model, nhead)
        super().__init__(
            d_model, nhead, dim_feedforward, dropout, activation=F.relu, batch_first=True
        )
        self.keep_attention = False
        self.attention_weights = None

    def _self_attention(
        self, x: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.self_attn(x, x, x, need_weights=need_weights, average_attn_weights=False)


class RotaryEncoderLayer(_PostNormForward, nn.Module):
    """The same post-norm layer with rotary self-attention (see harness.models.rope)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        dropout: float,
        *,
        num_positions: int = 5,
        rope_base: float = DEFAULT_ROPE_BASE,
    ) -> None:
        _check_heads(d_model, nhead)
        super().__init__()
        self.self_attn = RotarySelfAttention(
            d_model, nhead, dropout, num_positions=num_positions, base=rope_base
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.keep_attention = False
        self.attention_weights = None

    def _self_attention(
        self, x: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.self_attn(x, need_weights=need_weights)

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class TokenEncoder(nn.Module):
    """A stack of encoder layers, cloned from one prototype as nn.TransformerEncoder does
    (so the layers start with identical weights, like the authors' nn.TransformerEncoder)."""

    def __init__(self, layer: nn.Module, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(
        self, tokens: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        attention: list[torch.Tensor] = []
        for layer in self.layers:
            layer.keep_attention = return_attention
            try:
                tokens = layer(tokens)
            finally:
                layer.keep_attention = False
            if return_attention:
                attention.append(layer.attention_weights)
            # Drop the reference so the layer holds no autograd graph between calls.
            layer.attention_weights = None
        return tokens, attention


def _check_heads(d_model: int, nhead: int) -> None:
    if d_model < 1 or nhead < 1 or d_model % nhead:
        raise ValueError(
            f"d_model ({d_model}) must be a positive multiple of nhead ({nhead}); "
            "e.g. d_model 256 with nhead 8"
        )
