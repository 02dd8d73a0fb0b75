"""harness.training.gradients on small hand-built modules (real models: tests/unit/test_train_models.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from harness.training.gradients import (
    exploding_count,
    health_score,
    measure_gradients,
    vanishing_count,
)


class TinyNet(nn.Module):
    """conv -> BN -> ReLU -> pool -> 2 tokens -> TransformerEncoderLayer -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.embed = nn.Linear(8, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.unused = nn.Linear(4, 4)  # never called: silent in both modes
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        tokens = torch.stack([h.mean((2, 3)), h.amax((2, 3))], dim=1)  # (B, 2, 8)
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def _batches(n: int, batch: int = 6, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 1, 6, 6, generator=g), torch.randint(0, 3, (batch,), generator=g))
        for _ in range(n)
    ]


def _rows(rows: list[dict], mode: str) -> dict[str, dict]:
    return {row["layer"]: row for row in rows if row["mode"] == mode}


def test_output_mode_layers_order_and_silent() -> None:
    torch.manual_seed(0)
    rows = measure_gradients(TinyNet(), _batches(4), max_batches=3)
    out = [row for row in rows if row["mode"] == "output"]
    assert [r["layer"] for r in out] == [
        "conv",
        "embed",
        "encoder",
        "encoder.self_attn.out_proj",
        "encoder.linear1",
        "encoder.linear2",
        "unused",
        "head",
    ]
    assert [r["layer_index"] for r in out] == list(range(8))
    by_name = _rows(rows, "output")
    silent = {name for name, r in by_name.items() if r["batches"] == 0}
    assert silent == {"encoder.self_attn.out_proj", "unused"}
    assert by_name["unused"]["mean"] is None and by_name["unused"]["std"] is None
    for name in set(by_name) - silent:
        r = by_name[name]
        assert r["batches"] == 3  # max_batches honoured, one call per batch
        assert 0 < r["min"] <= r["mean"] <= r["max"]
    assert by_name["encoder"]["kind"] == "TransformerEncoderLayer"
    assert by_name["conv"]["kind"] == "Conv2d"


def test_output_norms_match_an_independent_computation() -> None:
    torch.manual_seed(1)
    model = TinyNet()
    batches = _batches(2, seed=3)
    rows = _rows(measure_gradients(model, batches, max_batches=2), "output")
    # Independently: d(mean CE)/d(logits) = (softmax - onehot) / B, on a train-mode copy.
    expected = []
    for seen, (x, y) in enumerate(batches):
        probe = copy.deepcopy(model).train()
        # BN running stats advance batch by batch in the measured copy; replay that.
        for x_prev, _ in batches[:seen]:
            with torch.no_grad():
                probe(x_prev)
        logits = probe(x)
        grad = (torch.softmax(logits.detach().double(), 1) - nn.functional.one_hot(y, 3)) / len(y)
        expected.append(float(grad.norm()))
    assert rows["head"]["mean"] == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert rows["head"]["max"] == pytest.approx(max(expected), rel=1e-5)


def test_param_mode_and_model_untouched() -> None:
    torch.manual_seed(2)
    model = TinyNet().eval()
    before = copy.deepcopy(model.state_dict())
    batches = _batches(1, seed=5)
    rows = measure_gradients(model, batches, max_batches=20)
    # The measured model is unchanged: same state (BN running stats too), no grads, eval mode.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training

    params = _rows(rows, "param")
    # MultiheadAttention owns in_proj_weight/in_proj_bias directly; out_proj gets gradients here.
    assert "encoder.self_attn" in params and params["encoder.self_attn.out_proj"]["batches"] == 1
    assert params["unused"]["batches"] == 0 and params["unused"]["mean"] is None
    assert "bn" in params and "encoder" not in params  # encoder owns no parameter itself
    probe = copy.deepcopy(model).train()
    x, y = batches[0]
    nn.functional.cross_entropy(probe(x), y).backward()
    expected = torch.cat([probe.conv.weight.grad.flatten(), probe.conv.bias.grad.flatten()])
    assert params["conv"]["mean"] == pytest.approx(float(expected.norm()), rel=1e-5)
    assert params["conv"]["std"] == 0.0  # one batch


def test_health_score_and_counts() -> None:
    means = [1e-3, 5.0, None, 2e-7, 11.0, 1e-6, 10.0, 0.5]
    # measured: 7; healthy strictly inside (1e-6, 10): 1e-3, 5.0, 0.5
    assert health_score(means, 1e-6, 10) == pytest.approx(3 / 7)
    assert health_score(means, 1e-6, 10, count_silent=True) == pytest.approx(3 / 8)
    assert vanishing_count(means, 1e-6) == 2  # 2e-7 and the edge 1e-6
    assert exploding_count(means, 10) == 2  # 11 and the edge 10
    assert health_score(means, 1e-7, 100) == pytest.approx(7 / 7)
    # The reference-code artifact: 35 hooked layers, 3 silent, all others healthy -> 32/35.
    nope_like = [0.1] * 32 + [None] * 3
    assert health_score(nope_like, 1e-6, 10) == 1.0
    assert health_score(nope_like, 1e-6, 10, count_silent=True) == pytest.approx(32 / 35)
    with pytest.raises(ValueError, match="low < high"):
        health_score(means, 10, 1e-6)
    with pytest.raises(ValueError, match="all were silent"):
        health_score([None, None], 1e-6, 10)
