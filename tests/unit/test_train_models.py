"""Gradient measurement on the real architectures (models/), at initialisation, one batch."""

from __future__ import annotations

import pytest
import torch

from harness import models
from harness.training.gradients import health_score, measure_gradients


def _measure(name: str, channels: int = 3) -> list[dict]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = models.build_model(name, channels, 10)
    generator = torch.Generator().manual_seed(1)
    batch = (torch.randn(4, channels, 32, 32, generator=generator), torch.tensor([0, 3, 5, 9]))
    return measure_gradients(model, [batch], max_batches=20)


def _means(rows: list[dict], mode: str) -> list[float | None]:
    return [row["mean"] for row in rows if row["mode"] == mode]


def test_gradattn_nope_attention_out_proj_is_silent() -> None:
    rows = _measure("gradattn_nope")
    output = [row for row in rows if row["mode"] == "output"]
    assert len(output) == 35
    silent = [row["layer"] for row in output if row["batches"] == 0]
    assert silent == [f"encoder.layers.{i}.self_attn.out_proj" for i in range(3)]
    means = _means(rows, "output")
    # In Table 7's widest range every layer that fired is healthy at initialisation: the
    # reference convention then still gives 32/35 = 0.914, the paper's No-PE figure.
    assert health_score(means, 1e-7, 1e2) == 1.0
    assert health_score(means, 1e-7, 1e2, count_silent=True) == pytest.approx(32 / 35)
    unhealthy = sum(1 for m in means if m is not None and not 1e-6 < m < 10)
    assert health_score(means, 1e-6, 10) == pytest.approx((32 - unhealthy) / 32)
    assert health_score(means, 1e-6, 10, count_silent=True) == pytest.approx((32 - unhealthy) / 35)
    # In the parameter view out_proj does receive gradients: nothing is silent there.
    param = [row for row in rows if row["mode"] == "param"]
    assert all(row["batches"] == 1 for row in param)
    assert any(row["layer"].endswith("self_attn.out_proj") for row in param)


@pytest.mark.parametrize("name, hooked", [("resnet18", 21), ("gradattn_rope", 41)])
def test_models_without_silent_layers(name: str, hooked: int) -> None:
    rows = _measure(name, channels=1)
    output = [row for row in rows if row["mode"] == "output"]
    assert len(output) == hooked
    assert all(row["batches"] == 1 for row in rows)
    assert [row["layer_index"] for row in output] == list(range(hooked))
