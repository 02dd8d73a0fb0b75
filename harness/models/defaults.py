"""Model hyper-parameter defaults, torch-free so the registry (and the report that prints model
labels) can be imported without loading torch."""

from __future__ import annotations

# Table 1 of the paper.
TRANSFORMER_DEFAULTS = {
    "d_model": 256,
    "nhead": 8,
    "dim_feedforward": 512,
    "num_layers": 3,
    "dropout": 0.1,
}

# RoFormer's base for the rotation frequencies, as in the reference notebooks.
DEFAULT_ROPE_BASE = 10000.0
