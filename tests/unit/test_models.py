"""models/: registry, shapes, architecture structure, parameter counts, `harness models`."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torchvision
from torch import nn

from harness.cli import build_parser, main
from harness.models import (
    MODEL_NAMES,
    build_model,
    count_parameters,
    default_overrides,
    describe,
    is_gradattn,
)
from harness.models.resnet import BasicBlock

GRADATTN = ("gradattn_nope", "gradattn_learnable", "gradattn_rope")
# (channels, size, classes) from the paper's datasets: FashionMNIST, CIFAR-10/SVHN, Tiny
# ImageNet / MedMNIST at 64, PCam, PAD-UFES-20.
INPUT_CASES = ((1, 28, 10), (3, 32, 10), (3, 64, 200), (3, 96, 2), (3, 224, 6))
STAGE_CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512)  # output channels of the 8 blocks


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.cache
def _cached(name: str, in_channels: int, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, in_channels, num_classes)


def fresh(name: str, in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """A private copy of a cached, seeded model (copying is cheaper than initialising)."""
    return copy.deepcopy(_cached(name, in_channels, num_classes))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_on_every_input_shape(name: str) -> None:
    for channels, size, classes in INPUT_CASES:
        # Building is the slow part: reuse the cached 3-channel, 10-class model where it fits.
        cached = (channels, classes) == (3, 10)
        model = (fresh(name) if cached else build_model(name, channels, classes)).train()
        logits = model(torch.randn(2, channels, size, size))
        assert logits.shape == (2, classes)
        assert torch.isfinite(logits).all()
        logits.logsumexp(dim=1).sum().backward()
        first_conv = model.backbone.conv1 if is_gradattn(name) else model.conv1
        assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
        assert all(p.grad is not None for p in model.parameters())


def test_resnet18_state_dict_equals_torchvision_in_order() -> None:
    ours = fresh("resnet18", 3, 1000).state_dict()
    reference = torchvision.models.resnet18().state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [
        (k, tuple(v.shape)) for k, v in reference.items()
    ]


def test_resnet18_computes_what_torchvision_computes() -> None:
    ours = fresh("resnet18", 3, 1000).eval()
    reference = torchvision.models.resnet18().eval()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


def test_resnet_init_is_torchvision_style() -> None:
    model = fresh("resnet18")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    # kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out_channels * k * k)).
    weight = model.layer4[0].conv1.weight
    expected = (2.0 / (512 * 9)) ** 0.5
    assert abs(weight.std().item() - expected) / expected < 0.05
    assert abs(weight.mean().item()) < expected * 0.05


@pytest.mark.parametrize("name", GRADATTN)
def test_gradattn_backbone_has_no_skip_in_the_module_tree(name: str) -> None:
    model = fresh(name)
    names = [n for n, _ in model.named_modules()]
    assert not any("downsample" in n for n in names)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 17  # stem + 8 blocks x 2, no 1x1 projection
    assert all(c.kernel_size in ((7, 7), (3, 3)) for c in convs)
    blocks = [m for m in model.backbone.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8 and not any(b.skip for b in blocks)
    assert model.backbone.fc is None


def _zero_convs(block: BasicBlock) -> None:
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv2.weight.zero_()


@pytest.mark.parametrize("block_path", ["layer1.0", "layer2.0"])
def test_gradattn_block_without_convs_outputs_zero_but_resnet_block_does_not(block_path) -> None:
    x = torch.randn(2, 64, 8, 8)
    plain = fresh("gradattn_nope").backbone.get_submodule(block_path).eval()
    residual = fresh("resnet18").get_submodule(block_path).eval()
    _zero_convs(plain)
    _zero_convs(residual)
    with torch.no_grad():
        assert torch.count_nonzero(plain(x)) == 0
        shortcut = residual.downsample(x) if residual.downsample is not None else x
        torch.testing.assert_close(residual(x), torch.relu(shortcut))
        assert torch.count_nonzero(residual(x)) > 0


def test_gradattn_tokens_after_a_dead_block_carry_only_the_projection_bias() -> None:
    # No shortcut anywhere: if layer1.0 outputs zeros, every later feature map is zero (eval-mode
    # BN of zeros is its bias, 0), so tokens 2..5 are exactly their projections' biases.
    model = fresh("gradattn_nope").eval()
    _zero_convs(model.backbone.layer1[0])
    with torch.no_grad():
        tokens = model.tokens(torch.randn(2, 3, 32, 32))
    for index in range(1, 5):
        expected = model.token_proj[index].bias.expand(2, -1)
        torch.testing.assert_close(tokens[:, index], expected)
    assert not torch.allclose(tokens[0, 0], model.token_proj[0].bias)


@pytest.mark.parametrize("name", ["gradattn_nope", "gradattn_learnable"])
def test_five_tokens_come_from_maxpool_and_the_four_stages(name: str) -> None:
    model = fresh(name).eval()
    backbone = model.backbone
    captured: dict[str, torch.Tensor] = {}
    points = {
        "maxpool": backbone.maxpool,
        **{f"layer{i}": backbone.stages[i - 1] for i in range(1, 5)},
    }
    handles = [
        module.register_forward_hook(lambda m, i, o, key=key: captured.__setitem__(key, o))
        for key, module in points.items()
    ]
    with torch.no_grad():
        _, details = model(torch.randn(2, 3, 64, 64), return_details=True)
    for handle in handles:
        handle.remove()
    assert [captured[k].shape[1] for k in points] == [64, 64, 128, 256, 512]
    expected = torch.stack(
        [
            proj(captured[k].mean(dim=(2, 3)))
            for proj, k in zip(model.token_proj, points, strict=True)
        ],
        dim=1,
    )
    if model.pos_embedding is not None:
        expected = expected + model.pos_embedding
    assert details["tokens"].shape == (2, 5, 256)
    torch.testing.assert_close(details["tokens"], expected)


def test_learnable_positional_embedding() -> None:
    model = fresh("gradattn_learnable")
    pe = model.pos_embedding
    assert isinstance(pe, nn.Parameter) and pe.requires_grad
    assert pe.shape == (1, 5, 256)
    assert abs(pe.mean().item()) < 0.15 and 0.85 < pe.std().item() < 1.15  # ~ N(0, 1)
    assert fresh("gradattn_nope").pos_embedding is None
    assert fresh("gradattn_rope").pos_embedding is None


def test_gradattn_adds_about_1_6_million_parameters() -> None:
    base = count_parameters(fresh("resnet18"))
    for name in GRADATTN:
        added = count_parameters(fresh(name)) - base
        assert 1.5e6 <= added <= 1.7e6, (name, added)
    # The learnable PE is exactly 5 x 256 more than No-PE; RoPE drops the 3 x 3 x 256 QKV biases.
    nope = count_parameters(fresh("gradattn_nope"))
    assert count_parameters(fresh("gradattn_learnable")) - nope == 5 * 256
    assert nope - count_parameters(fresh("gradattn_rope")) == 3 * 3 * 256


def test_reference_small_no_pe_config_has_fewer_parameters_than_resnet18() -> None:
    small = build_model("gradattn_nope", 3, 10, d_model=32, nhead=16, dim_feedforward=2)
    count = count_parameters(small)
    assert count < count_parameters(fresh("resnet18"))
    assert abs(count - 11.05e6) < 0.01e6  # REFERENCE_NOTES: "about 11.05M"
    assert small.encoder.layers[0].self_attn.head_dim == 2


def test_se_and_cbam_add_their_closed_form_parameter_counts() -> None:
    base = count_parameters(fresh("resnet18"))
    reduction = 16
    # SE per block: Linear(C, C/r) + Linear(C/r, C), no biases.
    se = sum(2 * c * (c // reduction) for c in STAGE_CHANNELS)
    # CBAM per block: the same shared MLP + one 7x7 conv from 2 maps to 1, no bias.
    cbam = se + len(STAGE_CHANNELS) * 2 * 7 * 7
    assert count_parameters(fresh("se_resnet18")) - base == se
    assert count_parameters(fresh("cbam_resnet18")) - base == cbam


def test_resnet18_has_the_papers_11_2_million_parameters() -> None:
    assert count_parameters(fresh("resnet18", 3, 1000)) == 11_689_512  # torchvision's figure
    assert abs(count_parameters(fresh("resnet18", 3, 200)) - 11.2e6) < 0.1e6


def test_count_parameters_trainable_only() -> None:
    model = fresh("resnet18")
    model.fc.requires_grad_(False)
    assert count_parameters(model) - count_parameters(model, trainable_only=True) == 512 * 10 + 10


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_gives_same_initial_weights(name: str) -> None:
    torch.manual_seed(0)  # the seed the cached model was built with
    rebuilt = build_model(name, 3, 10).state_dict()
    cached = _cached(name, 3, 10).state_dict()
    assert list(rebuilt) == list(cached)
    assert all(torch.equal(rebuilt[k], cached[k]) for k in cached)


def test_different_seeds_give_different_initial_weights() -> None:
    for name in ("resnet18", "gradattn_rope"):
        torch.manual_seed(1)
        other = build_model(name, 3, 10).state_dict()
        cached = _cached(name, 3, 10).state_dict()
        changed = [
            k for k in cached if k.endswith("weight") and not torch.equal(other[k], cached[k])
        ]
        first_conv = "backbone.conv1.weight" if is_gradattn(name) else "conv1.weight"
        assert first_conv in changed and any(k.startswith(("fc", "classifier")) for k in changed)


def test_unknown_model_name_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet50'") as info:
        build_model("resnet50", 3, 10)
    assert all(name in str(info.value) for name in MODEL_NAMES)
    for function in (describe, is_gradattn, default_overrides):
        with pytest.raises(ValueError, match="valid names: resnet18, gradattn_nope"):
            function("GradAttn")


def test_inapplicable_or_unknown_override_names_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"resnet18 does not take override\(s\) d_model; valid overrides: none"
    ):
        build_model("resnet18", 3, 10, d_model=32)
    with pytest.raises(ValueError, match="valid overrides: d_model, nhead, dim_feedforward"):
        build_model("gradattn_nope", 3, 10, heads=4)
    with pytest.raises(ValueError, match="valid overrides: reduction$"):
        build_model("se_resnet18", 3, 10, rope_base=100.0)
    with pytest.raises(ValueError, match="rope_base"):
        build_model("gradattn_learnable", 3, 10, rope_base=100.0)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("gradattn_nope", {"nhead": 7}, "divisible|multiple of nhead"),
        ("gradattn_rope", {"d_model": 32, "nhead": 32}, "even head dimension"),
        ("gradattn_nope", {"d_model": 0}, "positive integer"),
        ("gradattn_nope", {"num_layers": 2.5}, "positive integer"),
        ("gradattn_nope", {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ("se_resnet18", {"reduction": 128}, "at most 64"),
        ("cbam_resnet18", {"spatial_kernel": 4}, "odd"),
    ],
)
def test_bad_override_values_are_rejected(name, overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(name, 3, 10, **overrides)


@pytest.mark.parametrize(("in_channels", "num_classes"), [(0, 10), (3, 0), (3, True)])
def test_bad_channel_or_class_counts_are_rejected(in_channels, num_classes) -> None:
    with pytest.raises(ValueError, match="must be a positive integer"):
        build_model("resnet18", in_channels, num_classes)


def test_overrides_change_the_transformer() -> None:
    model = build_model("gradattn_rope", 1, 10, d_model=64, nhead=4, num_layers=2, rope_base=500.0)
    assert len(model.encoder.layers) == 2
    attention = model.encoder.layers[0].self_attn
    assert (attention.d_model, attention.nhead, attention.base) == (64, 4, 500.0)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_registry_helpers() -> None:
    assert MODEL_NAMES == (
        "resnet18",
        "gradattn_nope",
        "gradattn_learnable",
        "gradattn_rope",
        "se_resnet18",
        "cbam_resnet18",
    )
    assert [is_gradattn(n) for n in MODEL_NAMES] == [False, True, True, True, False, False]
    for name in MODEL_NAMES:
        text = describe(name)
        assert text and "\n" not in text
    assert default_overrides("gradattn_nope") == {
        "d_model": 256,
        "nhead": 8,
        "dim_feedforward": 512,
        "num_layers": 3,
        "dropout": 0.1,
    }


def test_harness_models_prints_the_table(capsys) -> None:
    assert main(["models", "--in-channels", "1", "--num-classes", "7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Models for 1-channel input and 7 classes (Table 1 transformer settings):"
    assert lines[1].split()[:3] == ["MODEL", "PARAMETERS", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == list(MODEL_NAMES)
    for name in MODEL_NAMES:
        # From the cached 3-channel, 10-class model: the 7x7 stem conv loses 2 x 64 x 49
        # weights, the classifier 3 rows (512 or d_model=256 inputs, plus bias).
        head_inputs = 256 if is_gradattn(name) else 512
        expected = count_parameters(_cached(name, 3, 10)) - 2 * 64 * 49 - 3 * (head_inputs + 1)
        assert rows[name].split()[1] == f"{expected:,}"
        assert rows[name].endswith(describe(name))
    assert rows["resnet18"].split()[1] == "11,173,831"


def test_harness_models_defaults_and_bad_input(capsys) -> None:
    args = build_parser().parse_args(["models"])
    assert (args.in_channels, args.num_classes) == (3, 10)
    assert main(["models", "--num-classes", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err
        == "harness: error: --num-classes must be a positive integer, got 0 (e.g. --num-classes 10)"
    )
    assert main(["models", "--in-channels", "-1"]) == 1
    assert "--in-channels must be a positive integer" in capsys.readouterr().err
