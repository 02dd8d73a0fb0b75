"""Rotary position embedding (RoPE) and the self-attention that applies it.

Convention: "rotate-half" (GPT-NeoX / Hugging Face Llama), not interleaved pairs. For a head
vector x of even size d, frequency m in [0, d/2) pairs element m with element m + d/2:

    theta_m(p) = p * base ** (-2m / d)
    out[m]       = x[m] cos theta_m - x[m + d/2] sin theta_m
    out[m + d/2] = x[m + d/2] cos theta_m + x[m] sin theta_m

so q(p_i) . k(p_j) depends on the positions only through p_j - p_i.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.defaults import DEFAULT_ROPE_BASE


def rotary_angles(
    positions: torch.Tensor, head_dim: int, base: float = DEFAULT_ROPE_BASE
) -> torch.Tensor:
    """Angles (len(positions), head_dim), each frequency repeated for both halves."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    exponents = (
        torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim
    )
    inv_freq = base ** (-exponents)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return torch.cat([angles, angles], dim=-1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, head_dim) by angles (T, head_dim) from `rotary_angles`."""
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return x * cos + rotate_half(x) * sin


class RotarySelfAttention(nn.Module):
    """Multi-head self-attention with RoPE on Q and K.

    Q, K, V projections have no bias; the output projection has one. Every projection is an
    nn.Linear called as a module, so hooks on them fire (unlike nn.MultiheadAttention's
    out_proj). Attention dropout is applied to the weights, as in nn.MultiheadAttention.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dropout: float = 0.0,
        *,
        num_positions: int = 5,
        base: float = DEFAULT_ROPE_BASE,
    ) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        self.d_model = d_model
        self.nhead = nhead
        self.head_dim = d_model // nhead
        if self.head_dim % 2:
            raise ValueError(
                f"RoPE needs an even head dimension; d_model/nhead = {self.head_dim}: "
                "choose nhead so that d_model/nhead is even"
            )
        if base <= 0:
            raise ValueError(f"rope_base must be positive, got {base}")
        self.dropout = dropout
        self.base = float(base)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model)
        # Token positions 0..T-1; a buffer (not in the state_dict) so tests can alter it.
        self.register_buffer(
            "positions", torch.arange(num_positions, dtype=torch.float32), persistent=False
        )

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q and K (rotated) and V, each (B, heads, T, head_dim)."""
        batch, length, _ = x.shape
        if length > self.positions.numel():
            raise ValueError(
                f"sequence of {length} tokens exceeds the {self.positions.numel()} positions "
                "this attention was built for"
            )

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.nhead, self.head_dim).transpose(1, 2)

        angles = rotary_angles(self.positions[:length], self.head_dim, self.base)
        q = apply_rotary(heads(self.q_proj(x)), angles)
        k = apply_rotary(heads(self.k_proj(x)), angles)
        return q, k, heads(self.v_proj(x))

    def forward(
        self, x: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (output (B, T, d_model), weights (B, heads, T, T) or None).

        Weights are computed explicitly only when asked for; otherwise the fused
        scaled_dot_product_attention kernel does the work.
        """
        q, k, v = self.project(x)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            weights = scores.softmax(dim=-1)
            context = F.dropout(weights, dropout_p, training=self.training) @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        batch, _, length, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, length, self.d_model)
        return self.out_proj(context), weights
