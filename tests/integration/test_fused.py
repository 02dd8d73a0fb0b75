"""FusedStep: S seeds trained as one vmapped model equal S separately trained models.

Compared in float64, where floating-point reordering (a grouped convolution sums in another
order) is too small for Adam to amplify; in float32 an element whose true gradient is rounding
noise gets Adam's full step in either sign, so float32 runs agree only statistically.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from harness import models
from harness.training.fused import FusedStep

MEMBERS, BATCH = 3, 8
RATES = [1e-3, 2e-3, 3e-3]  # one per member: ReduceLROnPlateau acts per member


def build(name: str) -> torch.nn.Module:
    if name == "small":  # conv + BatchNorm + linear, for the bookkeeping tests (fast)
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(32, 10),
        ).double()
    overrides = {"dropout": 0.0} if models.is_gradattn(name) else {}
    return models.build_model(name, 1, 10, **overrides).double()


def members(name: str, count: int = MEMBERS) -> list[torch.nn.Module]:
    built = []
    for seed in range(count):
        torch.manual_seed(seed)
        built.append(build(name))
    return built


def batches(
    steps: int, sizes: tuple[int, ...] = (BATCH, BATCH, 5), count: int = MEMBERS
) -> list[tuple]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for size in sizes[:steps]:
        x = torch.randn(count, size, 1, 16, 16, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 10, (count, size), generator=gen)
        out.append((x, y))
    return out


def train_separately(nets, optimizers, data) -> list[dict[str, float]]:
    sums = [[0.0, 0, 0] for _ in nets]
    for x, y in data:
        for i, (net, optimizer) in enumerate(zip(nets, optimizers, strict=True)):
            net.train()
            optimizer.zero_grad()
            logits = net(x[i])
            loss = F.cross_entropy(logits, y[i])
            loss.backward()
            optimizer.step()
            sums[i][0] += float(loss) * len(y[i])
            sums[i][1] += int((logits.argmax(1) == y[i]).sum())
            sums[i][2] += len(y[i])
    return [{"loss": s / n, "accuracy": c / n, "samples": n} for s, c, n in sums]


def max_difference(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> float:
    reference = net.state_dict()
    assert reference.keys() == state.keys()
    return max(float((reference[k].double() - state[k].double()).abs().max()) for k in state)


@pytest.mark.parametrize("name", ["resnet18"])
def test_fused_training_equals_separate_training(name: str) -> None:
    nets = members(name, 2)  # ResNet-18 in float64 is slow on the CPU: two members
    separate = [copy.deepcopy(n) for n in nets]
    optimizers = [
        torch.optim.Adam(n.parameters(), lr=rate, weight_decay=1e-4)
        for n, rate in zip(separate, RATES[:2], strict=True)
    ]
    fused = FusedStep(nets, lr=1.0, weight_decay=1e-4, device="cpu", precision="fp32")
    fused.set_learning_rates(RATES[:2])
    data = batches(3, (BATCH, 5), count=2)  # a full batch and a partial one
    for x, y in data:
        fused.step(x, y)
    expected = train_separately(separate, optimizers, data)
    got = fused.epoch_metrics()
    for i in range(2):
        # Weights and BatchNorm running statistics, member by member (none mixes members).
        assert max_difference(separate[i], fused.member_state(i)[0]) < 1e-8, i
        assert got[i]["loss"] == pytest.approx(expected[i]["loss"], rel=1e-10)
        assert got[i]["accuracy"] == expected[i]["accuracy"]
        assert got[i]["samples"] == expected[i]["samples"] == 13
    assert fused.epoch_metrics()[0]["samples"] == 0  # read resets


def test_member_state_round_trips_through_a_single_job_checkpoint() -> None:
    """A member read out (state_dict + torch Adam state) trains on as a plain job would, and a
    plain job's state loaded into a member trains on as the member would."""
    nets = members("small")
    fused = FusedStep(nets, lr=1e-3, weight_decay=1e-4, device="cpu", precision="fp32")
    first, second = batches(2)
    fused.step(*first)
    model_state, optimizer_state = fused.member_state(1)
    single = build("small")
    single.load_state_dict(model_state)
    optimizer = torch.optim.Adam(single.parameters(), lr=1e-3, weight_decay=1e-4)
    optimizer.load_state_dict(optimizer_state)
    train_separately([single], [optimizer], [(second[0][1:2], second[1][1:2])])
    fused.step(*second)
    assert max_difference(single, fused.member_state(1)[0]) < 1e-8

    # ...and back: member 0 takes the single job's state and continues like it.
    fused.load_member(0, single.state_dict(), optimizer.state_dict())
    third = batches(1)[0]
    fused.step(*third)
    train_separately([single], [optimizer], [(third[0][:1], third[1][:1])])
    assert max_difference(single, fused.member_state(0)[0]) < 1e-8


def test_keep_drops_members_and_the_rest_train_on_unchanged() -> None:
    nets = members("small")
    separate = [copy.deepcopy(n) for n in nets]
    optimizers = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in separate]
    fused = FusedStep(nets, lr=1e-3, weight_decay=0.0, device="cpu", precision="fp32")
    first, second = batches(2)
    fused.step(*first)
    train_separately(separate, optimizers, [first])
    fused.keep([2, 0])  # member 1 stopped early; order as given
    assert fused.size == 2
    kept = (second[0][[2, 0]], second[1][[2, 0]])
    fused.step(*kept)
    train_separately([separate[2], separate[0]], [optimizers[2], optimizers[0]], [kept])
    assert max_difference(separate[2], fused.member_state(0)[0]) < 1e-8
    assert max_difference(separate[0], fused.member_state(1)[0]) < 1e-8


def test_dropout_masks_differ_between_members() -> None:
    """vmap's randomness='different': members with equal weights and inputs draw their own
    dropout masks (a shared mask would correlate the seeds)."""
    torch.manual_seed(0)
    net = models.build_model("gradattn_nope", 1, 10, dropout=0.5)
    fused = FusedStep(
        [copy.deepcopy(net) for _ in range(2)],
        lr=0.0,
        weight_decay=0.0,
        device="cpu",
        precision="fp32",
    )
    x = torch.randn(1, 4, 1, 16, 16).expand(2, -1, -1, -1, -1)
    logits = fused._forward(fused.params, fused.buffers, x)
    assert not torch.allclose(logits[0], logits[1])


def test_bf16_fused_step_trains_and_refuses_bad_input() -> None:
    torch.manual_seed(0)
    nets = [models.build_model("resnet18", 1, 10) for _ in range(2)]
    fused = FusedStep(nets, lr=1e-3, weight_decay=0.0, device="cpu", precision="bf16")
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 8, 1, 16, 16, generator=gen), torch.randint(0, 10, (2, 8), generator=gen)
    for _ in range(3):
        fused.step(x, y)
    metrics = fused.epoch_metrics()
    assert all(m["samples"] == 24 and m["loss"] == m["loss"] for m in metrics)  # finite, counted
    with pytest.raises(ValueError, match="stack one batch per member"):
        fused.step(x[:1], y[:1])
    with pytest.raises(ValueError, match="unknown precision"):
        FusedStep(nets, lr=1e-3, weight_decay=0.0, device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        FusedStep(nets, lr=1e-3, weight_decay=0.0, device="cpu", cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphed_fused_step_matches_eager_on_the_gpu() -> None:
    torch.manual_seed(0)
    nets = [models.build_model("resnet18", 1, 10).cuda() for _ in range(3)]
    graphed = FusedStep(
        [copy.deepcopy(n) for n in nets],
        lr=1e-3,
        weight_decay=1e-4,
        device="cuda",
        precision="fp32",
        cuda_graph=True,
    )
    eager = FusedStep(
        nets, lr=1e-3, weight_decay=1e-4, device="cuda", precision="fp32", cuda_graph=False
    )
    gen = torch.Generator().manual_seed(1)
    for size in (16, 16, 5, 16):  # the partial batch gets its own graph
        x = torch.randn(3, size, 1, 16, 16, generator=gen).cuda()
        y = torch.randint(0, 10, (3, size), generator=gen).cuda()
        graphed.step(x, y)
        eager.step(x, y)
    a, b = graphed.epoch_metrics(), eager.epoch_metrics()
    for i in range(3):
        assert a[i]["samples"] == b[i]["samples"] == 53
        assert a[i]["loss"] == pytest.approx(b[i]["loss"], rel=1e-3)
