"""Batched, per-sample random Table-2 augmentation with tensor ops (GPU or CPU).

`BatchAugment(spec, mean, std, resize)` takes the datasets' augmentation spec (a list of dicts
such as {"op": "hflip", "p": 0.5} or {"op": "rotate", "degrees": 10}) and reproduces
torchvision's transforms with every sample drawing its own parameters from the distributions
torchvision uses. `sample_params(n, generator)` draws them (a dict of tensors, one row per
sample) and `apply(images_uint8, params)` applies them, then normalises; the split lets tests
compare against torchvision's functional ops on the same parameters.

Geometry follows torchvision's tensor kernels: rotation and translation are inverse affine maps
about the image centre in pixel units, sampled with grid_sample (nearest, zero fill, as
RandomRotation/RandomAffine default); consecutive hflip/rotate/affine ops are fused into one
resampling. Padded crops are exact integer gathers. Resized crops sample bilinearly inside the
crop box (identical to crop-then-resize when upsampling; torchvision antialiases when the crop
is larger than the output, this does not). Colour jitter applies brightness, contrast,
saturation and hue in a random order per sample, as ColorJitter does, on floats in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from harness.datasets.gpu.color import OPS as COLOR_OPS
from harness.datasets.gpu.color import identity_factor

GEOMETRIC_OPS = ("hflip", "rotate", "affine")
VALID_OPS = ("hflip", "rotate", "affine", "pad_crop", "color_jitter", "resized_crop")
INTERPOLATIONS = ("nearest", "bilinear")

Params = dict[str, torch.Tensor]


def parse_size(size: Any) -> tuple[int, int] | None:
    """An int, a [h, w] pair or None -> (h, w) or None."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    height, width = (int(v) for v in size)
    return (height, width)


def _pair(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    first, second = value
    return (float(first), float(second))


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) * (high - low) + low


def _inverse_rotation(degrees: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) inverse maps of torchvision's rotate(angle): counter-clockwise on screen."""
    rad = torch.deg2rad(degrees)
    cos, sin = torch.cos(rad), torch.sin(rad)
    matrix = torch.zeros(len(degrees), 3, 3, device=degrees.device)
    matrix[:, 0, 0], matrix[:, 0, 1] = cos, -sin
    matrix[:, 1, 0], matrix[:, 1, 1] = sin, cos
    matrix[:, 2, 2] = 1.0
    return matrix


def _inverse_translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    matrix = torch.eye(3, device=tx.device).repeat(len(tx), 1, 1)
    matrix[:, 0, 2], matrix[:, 1, 2] = -tx, -ty
    return matrix


class BatchAugment:
    """Per-sample random augmentation of a uint8 batch, then normalisation (float32 out).

    `spec`: the training ops in order (empty for validation/test); `mean`/`std`: per channel;
    `resize`: applied first (bilinear, antialiased, as transforms.Resize); `image_size`: the
    stored images' (h, w), needed only when there is no resize and the spec has size-dependent
    ops (translation, crops).
    """

    def __init__(
        self,
        spec: list[dict[str, Any]],
        mean: list[float],
        std: list[float],
        resize: Any = None,
        image_size: Any = None,
        interpolation: str = "nearest",
    ) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}"
            )
        self.spec = [dict(op) for op in spec]
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.resize = parse_size(resize)
        self.interpolation = interpolation
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        # The (h, w) each op sees, known up front so that sampling never looks at the images.
        size = self.resize or parse_size(image_size)
        self.input_sizes: list[tuple[int, int] | None] = []
        for number, op in enumerate(self.spec):
            name = op.get("op")
            if name not in VALID_OPS:
                raise ValueError(
                    f"augmentation op #{number} {name!r} is unknown; valid: {', '.join(VALID_OPS)}"
                )
            needs_size = name in ("pad_crop", "resized_crop") or (
                name == "affine" and op.get("translate")
            )
            if needs_size and size is None:
                raise ValueError(f"op {name!r} needs the image size: pass resize= or image_size=")
            self.input_sizes.append(size)
            if name in ("pad_crop", "resized_crop"):
                size = parse_size(op["size"])
        self.output_size = size

    # ----------------------------------------------------------------- parameter sampling

    def sample_params(self, n: int, generator: torch.Generator) -> Params:
        """Draw every op's parameters for `n` samples on the generator's device."""
        params: Params = {}
        for number, op in enumerate(self.spec):
            key, name = f"{number}.", op["op"]
            if name == "hflip":
                params[key + "flip"] = _uniform(n, 0, 1, generator) < float(op.get("p", 0.5))
            elif name == "rotate":
                low, high = self._degree_range(op.get("degrees", 0))
                params[key + "angle"] = _uniform(n, low, high, generator)
            elif name == "affine":
                self._sample_affine(params, key, op, n, generator, self.input_sizes[number])
            elif name == "pad_crop":
                self._sample_pad_crop(params, key, op, n, generator, self.input_sizes[number])
            elif name == "color_jitter":
                self._sample_jitter(params, key, op, n, generator)
            elif name == "resized_crop":
                self._sample_resized_crop(params, key, op, n, generator, self.input_sizes[number])
        return params

    @staticmethod
    def _degree_range(degrees: Any) -> tuple[float, float]:
        if isinstance(degrees, (int, float)):
            return (-float(degrees), float(degrees))
        return _pair(degrees)

    def _sample_affine(
        self, params: Params, key: str, op: dict, n: int, gen: torch.Generator, size
    ) -> None:
        low, high = self._degree_range(op.get("degrees", 0))
        params[key + "angle"] = _uniform(n, low, high, gen)
        translate = op.get("translate")
        if translate:
            # RandomAffine: integer shifts, round(uniform(-f * size, f * size)); x uses the width.
            max_dx, max_dy = translate[0] * size[1], translate[1] * size[0]
            params[key + "tx"] = torch.round(_uniform(n, -max_dx, max_dx, gen))
            params[key + "ty"] = torch.round(_uniform(n, -max_dy, max_dy, gen))

    def _sample_pad_crop(
        self, params: Params, key: str, op: dict, n: int, gen: torch.Generator, size
    ) -> None:
        padding = int(op.get("padding", 0))
        out_h, out_w = parse_size(op["size"])
        free_h, free_w = size[0] + 2 * padding - out_h, size[1] + 2 * padding - out_w
        if free_h < 0 or free_w < 0:
            raise ValueError(f"pad_crop size {op['size']} is larger than the padded image {size}")
        params[key + "top"] = torch.randint(0, free_h + 1, (n,), generator=gen, device=gen.device)
        params[key + "left"] = torch.randint(0, free_w + 1, (n,), generator=gen, device=gen.device)

    def _sample_jitter(
        self, params: Params, key: str, op: dict, n: int, gen: torch.Generator
    ) -> None:
        enabled = []
        for name in COLOR_OPS:
            amount = op.get(name, 0) or 0
            if not amount:
                continue
            enabled.append(name)
            if name == "hue":
                params[key + name] = _uniform(n, -float(amount), float(amount), gen)
            else:
                params[key + name] = _uniform(
                    n, max(0.0, 1 - float(amount)), 1 + float(amount), gen
                )
        if enabled:
            # ColorJitter applies its ops in a random order; a uniform permutation of the
            # enabled ops has the same distribution as torchvision's permutation of all four.
            scores = torch.rand(n, len(enabled), generator=gen, device=gen.device)
            params[key + "order"] = scores.argsort(dim=1)

    def _sample_resized_crop(
        self, params: Params, key: str, op: dict, n: int, gen: torch.Generator, size
    ) -> None:
        height, width = size
        scale = _pair(op.get("scale", (0.08, 1.0)))
        ratio = _pair(op.get("ratio", (3 / 4, 4 / 3)))
        attempts = 10  # RandomResizedCrop tries 10 boxes, then falls back to a centre crop
        area = height * width * _uniform(n * attempts, *scale, gen).view(n, attempts)
        log_ratio = _uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), gen)
        aspect = torch.exp(log_ratio).view(n, attempts)
        crop_w = torch.round(torch.sqrt(area * aspect))
        crop_h = torch.round(torch.sqrt(area / aspect))
        valid = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
        first = valid.int().argmax(dim=1, keepdim=True)
        found = valid.any(dim=1)
        fb_h, fb_w = self._fallback_box(height, width, ratio)
        crop_h = torch.where(found, crop_h.gather(1, first).squeeze(1), float(fb_h))
        crop_w = torch.where(found, crop_w.gather(1, first).squeeze(1), float(fb_w))
        top = torch.floor(_uniform(n, 0, 1, gen) * (height - crop_h + 1))
        left = torch.floor(_uniform(n, 0, 1, gen) * (width - crop_w + 1))
        params[key + "top"] = torch.where(found, top, float((height - fb_h) // 2))
        params[key + "left"] = torch.where(found, left, float((width - fb_w) // 2))
        params[key + "height"], params[key + "width"] = crop_h, crop_w

    @staticmethod
    def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
        in_ratio = width / height
        if in_ratio < min(ratio):
            return int(round(width / min(ratio))), width
        if in_ratio > max(ratio):
            return height, int(round(height * max(ratio)))
        return height, width

    # ----------------------------------------------------------------------- application

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """uint8 (N, C, H, W) images -> augmented, normalised float32 images on their device."""
        x = images.float().div_(255.0)
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            x = F.interpolate(
                x, size=self.resize, mode="bilinear", align_corners=False, antialias=True
            )
        params = {k: v.to(x.device) for k, v in params.items()}
        pending: list[torch.Tensor] = []  # inverse matrices of consecutive geometric ops
        only_flips = True
        for number, op in enumerate(self.spec):
            key, name = f"{number}.", op["op"]
            if name in GEOMETRIC_OPS:
                matrix, is_flip = self._inverse_matrix(name, key, params, len(x))
                pending.append(matrix)
                only_flips = only_flips and is_flip
                continue
            x = self._resample(x, pending, only_flips, params)
            pending, only_flips = [], True
            if name == "pad_crop":
                x = self._pad_crop(x, op, params[key + "top"], params[key + "left"])
            elif name == "color_jitter":
                x = self._jitter(x, key, params)
            elif name == "resized_crop":
                x = self._resized_crop(x, op, key, params)
        x = self._resample(x, pending, only_flips, params)
        mean, std = self._statistics(x.device)
        return (x - mean) / std

    def _statistics(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Made once per device: building a tensor from a list copies from host memory, which
        # would otherwise cost a host-device synchronisation every batch.
        if device not in self._constants:
            mean = torch.tensor(self.mean).view(1, -1, 1, 1).to(device)
            std = torch.tensor(self.std).view(1, -1, 1, 1).to(device)
            self._constants[device] = (mean, std)
        return self._constants[device]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.sample_params(len(images), generator))

    def _inverse_matrix(
        self, name: str, key: str, params: Params, n: int
    ) -> tuple[torch.Tensor, bool]:
        if name == "hflip":
            sign = 1.0 - 2.0 * params[key + "flip"].float()
            matrix = torch.eye(3, device=sign.device).repeat(n, 1, 1)
            matrix[:, 0, 0] = sign
            return matrix, True
        if name == "rotate":
            return _inverse_rotation(params[key + "angle"]), False
        # RandomAffine's angle is clockwise (the opposite of rotate); it applies after the
        # shift in the inverse map: input = R^-1 (output - t).
        matrix = _inverse_rotation(-params[key + "angle"])
        if key + "tx" in params:
            matrix = matrix @ _inverse_translation(params[key + "tx"], params[key + "ty"])
        return matrix, False

    def _resample(
        self, x: torch.Tensor, pending: list[torch.Tensor], only_flips: bool, params
    ) -> torch.Tensor:
        if not pending:
            return x
        total = pending[0]
        for matrix in pending[1:]:
            total = total @ matrix  # inverse of (op_k o ... o op_1) = inv_1 @ ... @ inv_k
        if only_flips:
            # An exact mirror: no resampling, so a flip alone is bit-identical to torchvision's.
            flipped = total[:, 0, 0] < 0
            return torch.where(flipped.view(-1, 1, 1, 1), x.flip(-1), x)
        height, width = x.shape[-2:]
        # Pixel units about the centre -> grid_sample's normalised units (align_corners=False):
        # theta = diag(2/W, 2/H, 1) @ total @ diag(W/2, H/2, 1), written out per entry.
        theta = total[:, :2, :].clone()
        theta[:, 0, 1] *= height / width
        theta[:, 1, 0] *= width / height
        theta[:, 0, 2] *= 2 / width
        theta[:, 1, 2] *= 2 / height
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(
            x, grid, mode=self.interpolation, padding_mode="zeros", align_corners=False
        )

    @staticmethod
    def _pad_crop(x: torch.Tensor, op: dict, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
        padding = int(op.get("padding", 0))
        out_h, out_w = parse_size(op["size"])
        padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
        rows = (top.long().view(-1, 1) + torch.arange(out_h, device=x.device)).view(-1, 1, out_h, 1)
        cols = (left.long().view(-1, 1) + torch.arange(out_w, device=x.device)).view(
            -1, 1, 1, out_w
        )
        rows = rows.expand(-1, x.shape[1], out_h, padded.shape[-1])
        picked_rows = padded.gather(2, rows)
        return picked_rows.gather(3, cols.expand(-1, x.shape[1], out_h, out_w))

    @staticmethod
    def _jitter(x: torch.Tensor, key: str, params: Params) -> torch.Tensor:
        enabled = [name for name in COLOR_OPS if key + name in params]
        if not enabled:
            return x
        order = params[key + "order"]
        for position in range(len(enabled)):
            for slot, name in enumerate(enabled):
                chosen = order[:, position] == slot
                factor = torch.where(chosen, params[key + name], identity_factor(name))
                adjusted = COLOR_OPS[name](x, factor)
                x = torch.where(chosen.view(-1, 1, 1, 1), adjusted, x)
        return x

    @staticmethod
    def _resized_crop(x: torch.Tensor, op: dict, key: str, params: Params) -> torch.Tensor:
        out_h, out_w = parse_size(op["size"])
        height, width = x.shape[-2:]
        top, left = params[key + "top"], params[key + "left"]
        crop_h, crop_w = params[key + "height"], params[key + "width"]
        theta = torch.zeros(len(x), 2, 3, device=x.device)
        theta[:, 0, 0] = crop_w / width
        theta[:, 0, 2] = (2 * left + crop_w) / width - 1
        theta[:, 1, 1] = crop_h / height
        theta[:, 1, 2] = (2 * top + crop_h) / height - 1
        grid = F.affine_grid(theta, [len(x), x.shape[1], out_h, out_w], align_corners=False)
        # Clamp to the crop's outermost pixel centres: resize() of the cropped image repeats
        # its edge pixels, it never reads the neighbours outside the box.
        lo_x, hi_x = (2 * left + 1) / width - 1, (2 * (left + crop_w) - 1) / width - 1
        lo_y, hi_y = (2 * top + 1) / height - 1, (2 * (top + crop_h) - 1) / height - 1
        gx = torch.clamp(grid[..., 0], lo_x.view(-1, 1, 1), hi_x.view(-1, 1, 1))
        gy = torch.clamp(grid[..., 1], lo_y.view(-1, 1, 1), hi_y.view(-1, 1, 1))
        grid = torch.stack((gx, gy), dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
