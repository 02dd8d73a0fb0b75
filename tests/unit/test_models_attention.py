"""GradAttn's attention: RoPE maths, encoder layers vs PyTorch's, attention details, hooks."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from torch import nn

from harness.models import MODEL_NAMES, build_model
from harness.models.encoder import RotaryEncoderLayer, TokenEncoderLayer
from harness.models.rope import RotarySelfAttention, apply_rotary, rotary_angles

GRADATTN = ("gradattn_nope", "gradattn_learnable", "gradattn_rope")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.cache
def _cached(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, 3, 10)


def fresh(name: str) -> nn.Module:
    return copy.deepcopy(_cached(name))


# --- RoPE ------------------------------------------------------------------------------------


def test_rotate_half_convention_on_a_small_vector() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    angles = rotary_angles(torch.tensor([1.0]), head_dim=4, base=10000.0)
    theta0, theta1 = 1.0, 10000.0 ** (-2 / 4)  # frequency m: p * base^(-2m/d)
    torch.testing.assert_close(angles, torch.tensor([[theta0, theta1, theta0, theta1]]))
    c0, s0, c1, s1 = math.cos(theta0), math.sin(theta0), math.cos(theta1), math.sin(theta1)
    # Element m pairs with m + d/2 (first half / second half), not with its neighbour.
    expected = torch.tensor([[1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1]])
    torch.testing.assert_close(apply_rotary(x, angles), expected)
    at_zero = rotary_angles(torch.tensor([0.0]), head_dim=4)
    torch.testing.assert_close(apply_rotary(x, at_zero), x)


def test_rope_logits_depend_only_on_the_position_offset() -> None:
    generator = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 16, generator=generator)
    positions = torch.arange(10.0)
    angles = rotary_angles(positions, head_dim=16)
    rotated_q = apply_rotary(q.expand(10, 16), angles)
    rotated_k = apply_rotary(k.expand(10, 16), angles)
    logits = rotated_q @ rotated_k.T  # logits[i, j] = q at position i . k at position j
    for shift in range(1, 5):
        torch.testing.assert_close(logits[:-shift, :-shift], logits[shift:, shift:])
    offsets = torch.stack([logits.diagonal(d)[0] for d in range(-4, 5)])
    assert offsets.unique().numel() == offsets.numel()  # yet it does depend on the offset


def test_rope_attention_logits_are_toeplitz_for_identical_tokens() -> None:
    torch.manual_seed(0)
    attention = RotarySelfAttention(32, 4, num_positions=5).eval()
    tokens = torch.randn(1, 1, 32).expand(2, 5, 32)  # same content at every position
    q, k, _ = attention.project(tokens)
    logits = q @ k.transpose(-2, -1)
    torch.testing.assert_close(logits[..., :-1, :-1], logits[..., 1:, 1:])
    assert not torch.allclose(logits[..., 0, 1], logits[..., 0, 2])


def _multihead_copy(attention: RotarySelfAttention) -> nn.MultiheadAttention:
    """An nn.MultiheadAttention with the same projections (QKV bias zero)."""
    reference = nn.MultiheadAttention(attention.d_model, attention.nhead, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(
            torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight])
        )
        reference.in_proj_bias.zero_()
        reference.out_proj.weight.copy_(attention.out_proj.weight)
        reference.out_proj.bias.copy_(attention.out_proj.bias)
    return reference.eval()


def test_rope_with_all_angles_zero_is_plain_multihead_attention() -> None:
    torch.manual_seed(0)
    attention = RotarySelfAttention(64, 8, num_positions=5).eval()
    reference = _multihead_copy(attention)
    attention.positions.zero_()
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        expected, expected_weights = reference(x, x, x, average_attn_weights=False)
        fused, none = attention(x)
        explicit, weights = attention(x, need_weights=True)
    assert none is None
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explicit, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)


def test_rope_changes_attention_when_positions_are_real() -> None:
    torch.manual_seed(0)
    attention = RotarySelfAttention(64, 8, num_positions=5).eval()
    reference = _multihead_copy(attention)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert not torch.allclose(attention(x)[0], reference(x, x, x)[0], atol=1e-4)


def test_rope_rejects_odd_head_dimension_and_too_many_tokens() -> None:
    with pytest.raises(ValueError, match="even head dimension"):
        RotarySelfAttention(24, 8)
    attention = RotarySelfAttention(16, 2, num_positions=5)
    with pytest.raises(ValueError, match="6 tokens exceeds the 5 positions"):
        attention(torch.randn(1, 6, 16))


# --- encoder layers vs nn.TransformerEncoderLayer ---------------------------------------------


def _torch_layer(d_model: int, nhead: int, ff: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(d_model, nhead, ff, dropout, batch_first=True)


@pytest.mark.parametrize("grad", [True, False])  # no_grad + eval takes PyTorch's fused path
def test_token_encoder_layer_equals_pytorch_layer(grad: bool) -> None:
    torch.manual_seed(0)
    ours = TokenEncoderLayer(256, 8, 512, 0.1).eval()
    assert isinstance(ours, nn.TransformerEncoderLayer)
    reference = _torch_layer(256, 8, 512, 0.1).eval()
    reference.load_state_dict(ours.state_dict())  # same keys, strict
    x = torch.randn(4, 5, 256)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
        ours.keep_attention = True
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
        assert ours.attention_weights.shape == (4, 8, 5, 5)


def test_token_encoder_layer_equals_pytorch_layer_in_train_mode_without_dropout() -> None:
    torch.manual_seed(0)
    ours = TokenEncoderLayer(32, 16, 2, 0.0).train()
    reference = _torch_layer(32, 16, 2, 0.0).train()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(4, 5, 32)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_rotary_layer_at_zero_angles_is_pytorchs_post_norm_layer() -> None:
    torch.manual_seed(0)
    ours = RotaryEncoderLayer(64, 8, 128, 0.1).eval()
    assert not isinstance(ours, nn.TransformerEncoderLayer)
    ours.self_attn.positions.zero_()
    reference = _torch_layer(64, 8, 128, 0.1).eval()
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("self_attn.")}
    reference.load_state_dict(state, strict=False)
    reference.self_attn.load_state_dict(_multihead_copy(ours.self_attn).state_dict())
    x = torch.randn(2, 5, 64)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_encoder_layers_reject_masks() -> None:
    layer = TokenEncoderLayer(16, 2, 8, 0.0)
    with pytest.raises(ValueError, match="masks are not supported"):
        layer(torch.randn(1, 5, 16), src_mask=torch.zeros(5, 5))


# --- GradAttn details --------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRADATTN)
def test_details_come_from_the_same_forward(name: str) -> None:
    model = fresh(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        logits, details = model(x, return_details=True)
    torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)
    assert details["tokens"].shape == (2, 5, 256)
    attention = details["attention"]
    assert len(attention) == 3
    for weights in attention:
        assert weights.shape == (2, 8, 5, 5) and torch.all(weights >= 0)
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 8, 5))
    # Layer 0's weights are softmax(Q K^T / sqrt(d_head)) of the reported tokens.
    layer = model.encoder.layers[0]
    tokens = details["tokens"]
    with torch.no_grad():
        if name == "gradattn_rope":
            q, k, _ = layer.self_attn.project(tokens)
        else:
            q, k, _ = torch.nn.functional.linear(
                tokens, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias
            ).chunk(3, dim=-1)
            q, k = (t.view(2, 5, 8, 32).transpose(1, 2) for t in (q, k))
    expected = (q @ k.transpose(-2, -1) / math.sqrt(32)).softmax(dim=-1)
    torch.testing.assert_close(attention[0], expected, rtol=1e-5, atol=1e-6)
    assert all(layer.attention_weights is None for layer in model.encoder.layers)


def test_encoder_layers_start_identical_like_nn_transformer_encoder() -> None:
    layers = _cached("gradattn_nope").encoder.layers
    first, second = layers[0].state_dict(), layers[1].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert layers[0].linear1.weight is not layers[1].linear1.weight


# --- module classes seen by gradient-health hooks ----------------------------------------------

# (hooked, fired): nn.MultiheadAttention calls its out_proj functionally, so 3 of the No-PE and
# Learnable-PE models' hooked Linears never fire; the RoPE layers are not TransformerEncoderLayers.
EXPECTED_HOOKS = {
    "resnet18": (21, 21),
    "gradattn_nope": (35, 32),
    "gradattn_learnable": (35, 32),
    "gradattn_rope": (41, 41),
    "se_resnet18": (37, 37),
    "cbam_resnet18": (45, 45),
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_hookable_modules_and_which_fire(name: str) -> None:
    model = fresh(name).train()
    fired: set[str] = set()
    hooked = [
        (module_name, module)
        for module_name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.TransformerEncoderLayer))
    ]
    for module_name, module in hooked:
        module.register_full_backward_hook(
            lambda m, gi, go, key=module_name: fired.add(key) if go[0] is not None else None
        )
    # An input that requires grad, as in training code after a first layer; without it PyTorch
    # warns that the stem conv's hook sees no input gradient.
    images = torch.randn(2, 3, 32, 32, requires_grad=True)
    model(images).logsumexp(dim=1).sum().backward()
    assert (len(hooked), len(fired)) == EXPECTED_HOOKS[name]
    silent = {module_name for module_name, _ in hooked} - fired
    assert all(s.endswith("self_attn.out_proj") for s in silent)
