"""FastStep against a plain fp32 eager training step, on the CPU (and graphed, where CUDA is)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.training.fastpath import FastStep, make_adam


def small_net(channels: int = 3, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm makes the partial last batch matter: its statistics must see only real samples.
    # No conv bias before BN (as in ResNet): its true gradient is 0, and Adam would amplify
    # the rounding noise of a different memory layout into a visible difference.
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )


def batches(device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    sizes = (8, 8, 3)  # two full batches and a partial last one
    return [
        (
            torch.randn(n, 3, 12, 12, generator=gen).to(device),
            torch.randint(0, 5, (n,), generator=gen).to(device),
        )
        for n in sizes
    ]


def plain_epoch(model: nn.Module, data, device: str = "cpu"):
    optimizer = make_adam(model, 1e-2, 1e-4, device)
    model.train()
    losses, correct, seen = [], 0, 0
    for inputs, labels in data:
        optimizer.zero_grad()
        logits = model(inputs)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item() * len(labels))
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    return sum(losses) / seen, correct / seen


def assert_same_parameters(a: nn.Module, b: nn.Module, tol: float) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(pa.float(), pb.float(), atol=tol, rtol=tol), name


def test_fp32_eager_step_matches_a_plain_step_including_the_partial_batch():
    reference, fast_model = small_net(), small_net()
    data = batches()
    ref_loss, ref_acc = plain_epoch(reference, data)
    fast = FastStep(fast_model, make_adam(fast_model, 1e-2, 1e-4, "cpu"), "cpu", precision="fp32")
    for inputs, labels in data:
        fast.step(inputs, labels)
    metrics = fast.epoch_metrics()
    assert metrics["samples"] == 19
    assert metrics["loss"] == pytest.approx(ref_loss, rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(ref_acc)
    assert_same_parameters(reference, fast_model, 1e-5)  # BN running stats included
    assert fast.epoch_metrics()["samples"] == 0  # reset after reading


def test_bf16_autocast_trains_close_to_fp32():
    reference, fast_model = small_net(), small_net()
    data = batches()
    ref_loss, _ = plain_epoch(reference, data)
    fast = FastStep(fast_model, make_adam(fast_model, 1e-2, 1e-4, "cpu"), "cpu", precision="bf16")
    for inputs, labels in data:
        fast.step(inputs, labels)
    metrics = fast.epoch_metrics()
    assert metrics["loss"] == pytest.approx(ref_loss, rel=0.05)
    logits = fast.predict(data[0][0])
    assert logits.dtype == torch.float32 and logits.shape == (8, 5)
    assert_same_parameters(reference, fast_model, 0.05)


def test_learning_rate_change_reaches_the_optimizer():
    model = small_net()
    fast = FastStep(model, make_adam(model, 1e-2, 0.0, "cpu"), "cpu", precision="fp32")
    fast.set_learning_rate(0.0)
    before = copy.deepcopy(model.state_dict())
    inputs, labels = batches()[0]
    fast.step(inputs, labels)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "weight" in k or "bias" in k)


def test_bad_settings_are_refused_with_the_fix():
    model = small_net()
    optimizer = make_adam(model, 1e-3, 0.0, "cpu")
    with pytest.raises(ValueError, match="valid: fp32, bf16"):
        FastStep(model, optimizer, "cpu", precision="fp16")
    with pytest.raises(ValueError, match="cuda_graph=False"):
        FastStep(model, optimizer, "cpu", cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_step_matches_eager_on_the_gpu():
    data = batches("cuda")
    eager_model, graph_model = small_net().cuda(), small_net().cuda()
    eager = FastStep(
        eager_model,
        make_adam(eager_model, 1e-2, 1e-4, "cuda"),
        "cuda",
        precision="fp32",
        cuda_graph=False,
    )
    graphed = FastStep(
        graph_model,
        make_adam(graph_model, 1e-2, 1e-4, "cuda"),
        "cuda",
        precision="fp32",
        cuda_graph=True,
    )
    for _epoch in range(2):  # the second epoch replays both captured graphs
        for inputs, labels in data:
            eager.step(inputs, labels)
            graphed.step(inputs, labels)
        eager_metrics, graph_metrics = eager.epoch_metrics(), graphed.epoch_metrics()
        assert graph_metrics["samples"] == 19
        assert graph_metrics["loss"] == pytest.approx(eager_metrics["loss"], rel=1e-4)
    assert_same_parameters(eager_model, graph_model, 1e-4)
