"""Protocols and the training configuration of one job, in one place.

A protocol is a named bundle of choices that change results:
- ``paper``: Tables 1-2 and Section 3 of the paper, implemented correctly.
- ``reference-code``: what the authors' notebooks did (REFERENCE_NOTES.md); every departure is
  a named switch under ``quirks`` so each can also be set on its own (``quirk.NAME=true``).

Overrides use dotted keys: ``lr=3e-4``, ``max_epochs=2``, ``model.d_model=32``,
``data.medmnist_size=64``, ``quirk.last_epoch_weights=true``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from harness import __version__
from harness.errors import HarnessError

PROTOCOLS = ("paper", "reference-code")
PIPELINES = ("loader", "device")  # batch source + step: docs/PERFORMANCE.md
HPARAM_SOURCES = ("paper", "tuned")
PRECISIONS = ("fp32", "bf16")  # harness.training.runtime maps them to autocast dtypes

# Reference-code quirks (REFERENCE_NOTES.md, "Where the code departs from the paper").
QUIRKS: dict[str, str] = {
    "corrupt_train_images": "FashionMNIST/CIFAR-10 training images pass ToTensor+Normalize, then "
    "ToPILImage (uint8 wrap-around), then the training transforms",
    "last_epoch_weights": "evaluate the last epoch's weights, not the best (aliasing state_dict copy)",
    "small_nope_encoder": "No-PE encoder with d_model 32, 16 heads, feed-forward 2 on CIFAR-10, "
    "PCam, TissueMNIST and PAD-UFES-20",
    "svhn_merge_extra": "SVHN merges train + test + extra before the 70/15/15 split",
    "ghs_count_silent": "GHS counts hooked layers whose hook never fired as unhealthy",
}
SMALL_NOPE_DATASETS = ("cifar10", "pcam", "tissuemnist", "padufes20")
SMALL_NOPE_ENCODER = {"d_model": 32, "nhead": 16, "dim_feedforward": 2}
CORRUPT_IMAGE_DATASETS = ("fashionmnist", "cifar10")
# Quirks that change no training run, only how the report reads stored rows.
REPORT_TIME_QUIRKS = ("ghs_count_silent",)


def quirk_applies(name: str, dataset: str, model: str) -> bool:
    """Whether switching quirk `name` on changes anything for (dataset, model)."""
    if name not in QUIRKS:
        raise HarnessError(f"unknown quirk {name!r}; valid: {', '.join(QUIRKS)}")
    if name == "corrupt_train_images":
        return dataset in CORRUPT_IMAGE_DATASETS
    if name == "small_nope_encoder":
        return model == "gradattn_nope" and dataset in SMALL_NOPE_DATASETS
    if name == "svhn_merge_extra":
        return dataset == "svhn"
    return True  # last_epoch_weights, ghs_count_silent: every dataset and model


# Architecture settings a model may accept as overrides (models.build_model(**overrides));
# which of them a given model takes is models.default_overrides(name).
MODEL_OVERRIDE_KEYS = (
    "d_model",
    "nhead",
    "dim_feedforward",
    "num_layers",
    "dropout",
    "rope_base",
    "reduction",
    "spatial_kernel",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything about one training run except model, dataset and seeds (Table 1 defaults)."""

    lr: float = 1e-3
    weight_decay: float = 1e-4  # Adam's L2 form, as Keras/PyTorch Adam(weight_decay=...)
    batch_size: int = 128
    max_epochs: int = 100
    lr_factor: float = 0.2
    lr_patience: int = 3
    min_lr: float = 1e-7
    es_patience: int = 7
    grad_batches: int = 20  # test batches for the gradient-health measurement
    max_train_batches: int | None = None  # cap per epoch (demo and tests only)
    deterministic: bool = True
    precision: str = "fp32"
    # "loader": DataLoader + per-image torchvision transforms (the authors' style, the paper
    # grid's default); "device": uint8 splits on the device + batched augmentation + FastStep.
    pipeline: str = "loader"
    # Where lr / weight_decay / model.dropout come from: "paper" (Table 1) or "tuned" (the best
    # trial of `harness tune` for this cell; `harness enqueue --hparams tuned`).
    hparams: str = "paper"
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    quirks: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every path into a job builds one (grid file, --set, CLI options, import, a stored
        # row), so a value no job could run with is refused here, before anything is queued.
        check_train_config(self)

    def quirk(self, name: str) -> bool:
        return bool(self.quirks.get(name, False))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _finite(low: float, *, above: bool = False, below: float | None = None) -> tuple[Any, str]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > low if above else v >= low) and (below is None or v < below)

    sign = ">" if above else ">="
    upper = f" and < {below}" if below is not None else ""
    return ok, f"a finite number {sign} {low:g}{upper}"


def _integer(low: int) -> tuple[Any, str]:
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    return ok, f"an integer >= {low}"


def _one_of(*values: Any) -> tuple[Any, str]:
    return (lambda v: v in values), "one of " + ", ".join(map(str, values))


# What each setting allows; TrainConfig.__post_init__ checks every one (docs/ERRORS.md).
ALLOWED: dict[str, tuple[Any, str]] = {
    # lr=0 freezes the weights: a legitimate control (the fused-path tests use it).
    "lr": _finite(0),
    "weight_decay": _finite(0),
    "batch_size": _integer(1),
    "max_epochs": _integer(1),
    "lr_factor": _finite(0, above=True, below=1),  # Keras: the factor must be < 1
    "lr_patience": _integer(0),
    "min_lr": _finite(0),
    "es_patience": _integer(0),
    "grad_batches": _integer(1),
    "max_train_batches": ((lambda v: v is None or _integer(1)[0](v)), "null or an integer >= 1"),
    "deterministic": ((lambda v: isinstance(v, bool)), "true or false"),
    "precision": _one_of(*PRECISIONS),
    "pipeline": _one_of(*PIPELINES),
    "hparams": _one_of(*HPARAM_SOURCES),
}
MODEL_ALLOWED: dict[str, tuple[Any, str]] = {
    "d_model": _integer(1),
    "nhead": _integer(1),
    "dim_feedforward": _integer(1),
    "num_layers": _integer(1),
    "dropout": _finite(0, below=1),
    "rope_base": _finite(0, above=True),
    "reduction": _integer(1),
    "spatial_kernel": ((lambda v: _integer(1)[0](v) and v % 2 == 1), "an odd integer >= 1"),
}


def refused(key: str, value: Any, allowed: str) -> HarnessError:
    """The one line for a setting no job could run with."""
    return HarnessError(
        f"setting {key}={value!r} refused: {key} must be {allowed} "
        "(fix --set, the grid file's overrides or the option that sets it)"
    )


def check_train_config(config: TrainConfig) -> None:
    for key, (ok, allowed) in ALLOWED.items():
        value = getattr(config, key)
        if not ok(value):
            raise refused(key, value, allowed)
    for key, value in config.model.items():
        rule = MODEL_ALLOWED.get(key)
        if rule is not None and not rule[0](value):
            raise refused(f"model.{key}", value, rule[1])
    heads = config.model.get("nhead")
    width = config.model.get("d_model")
    if heads and width and width % heads:
        raise refused("model.nhead", heads, f"a divisor of model.d_model={width}")


_SCALAR_KEYS = {
    f.name: f.type
    for f in dataclasses.fields(TrainConfig)
    if f.name not in ("model", "data", "quirks")
}


def valid_override_keys() -> list[str]:
    return (
        sorted(_SCALAR_KEYS)
        + [f"model.{k}" for k in MODEL_OVERRIDE_KEYS]
        + ["data.<option>"]
        + [f"quirk.{q}" for q in QUIRKS]
    )


def parse_value(text: str) -> Any:
    """`--set key=value` values: YAML scalars (1e-3, true, 2, null, fp32)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _coerce(key: str, value: Any) -> Any:
    kind = _SCALAR_KEYS[key]
    if value is None and "None" in str(kind):
        return None
    try:
        if "float" in str(kind):
            return float(value)
        if "int" in str(kind):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if "bool" in str(kind):
            if not isinstance(value, bool):
                raise ValueError
            return value
        return str(value)
    except (TypeError, ValueError):
        raise HarnessError(
            f"override {key}={value!r} has the wrong type (expected {kind})"
        ) from None


def resolve_config(
    protocol: str, dataset: str, model: str, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The protocol's settings for (dataset, model), then the user's dotted overrides."""
    if protocol not in PROTOCOLS:
        raise HarnessError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    scalars: dict[str, Any] = {}
    model_cfg: dict[str, Any] = {}
    data_cfg: dict[str, Any] = {}
    quirks = {name: protocol == "reference-code" for name in QUIRKS}
    if dataset == "padufes20":
        scalars["batch_size"] = 64  # Table 1 note / the authors' PAD-UFES-20 notebook

    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if key in _SCALAR_KEYS:
            scalars[key] = _coerce(key, value)
        elif head == "model" and rest in MODEL_OVERRIDE_KEYS:
            model_cfg[rest] = value
        elif head == "data" and rest:
            data_cfg[rest] = value
        elif head == "quirk" and rest in QUIRKS:
            if not isinstance(value, bool):
                raise HarnessError(f"override {key}={value!r} must be true or false")
            quirks[rest] = value
        else:
            raise HarnessError(
                f"unknown override {key!r}; valid keys: {', '.join(valid_override_keys())}"
            )
    if scalars.get("hparams", "paper") not in HPARAM_SOURCES:
        raise HarnessError(
            f"unknown hparams source {scalars['hparams']!r}; valid: {', '.join(HPARAM_SOURCES)}"
        )
    if scalars.get("pipeline", "loader") not in PIPELINES:
        raise HarnessError(
            f"unknown pipeline {scalars['pipeline']!r}; valid: {', '.join(PIPELINES)} "
            "(--set pipeline=...)"
        )
    if quirks["small_nope_encoder"] and model == "gradattn_nope" and dataset in SMALL_NOPE_DATASETS:
        model_cfg = {**SMALL_NOPE_ENCODER, **model_cfg}
    _check_model_overrides(model, model_cfg)
    _check_data_options(dataset, data_cfg)
    if quirks["svhn_merge_extra"] and dataset == "svhn":
        data_cfg.setdefault("merge_extra", True)
    # Keep only the quirks that are on: a job's key must not change when a new quirk is added.
    on = {name: True for name, enabled in quirks.items() if enabled}
    return TrainConfig(**scalars, model=model_cfg, data=data_cfg, quirks=on)


def _check_data_options(dataset: str, data_cfg: dict[str, Any]) -> None:
    """Refuse at enqueue time a data.<option> the dataset's loader would refuse in every job."""
    from harness import datasets

    if dataset not in datasets.DATASET_NAMES:
        return  # the grid layer reports unknown dataset names with the valid list
    allowed = datasets.get_source(dataset).options
    for key in data_cfg:
        if key not in allowed:
            valid = ", ".join(f"data.{k}" for k in allowed) or "none"
            raise HarnessError(f"override data.{key} does not apply to {dataset}; valid: {valid}")


def _check_model_overrides(model: str, model_cfg: dict[str, Any]) -> None:
    """Refuse at enqueue time what build_model would refuse inside every job."""
    from harness import models

    if model not in models.MODEL_NAMES:
        return  # the grid layer reports unknown model names with the valid list
    accepted = models.default_overrides(model)
    for key in model_cfg:
        if key not in accepted:
            valid = ", ".join(f"model.{k}" for k in accepted) or "none"
            raise HarnessError(f"override model.{key} does not apply to {model}; valid: {valid}")


@dataclass(frozen=True)
class JobSpec:
    """One (model, dataset, seed) training run under a protocol: what a job row describes."""

    model: str
    dataset: str
    seed: int
    split_seed: int
    protocol: str
    config: TrainConfig

    def key(self) -> str:
        """Hash of everything that changes the result; enqueueing twice adds nothing."""
        payload = {
            "model": self.model,
            "dataset": self.dataset,
            "seed": self.seed,
            "split_seed": self.split_seed,
            "protocol": self.protocol,
            "config": self.config.to_dict(),
            "harness_version": __version__,
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def check_cohort(specs: list[JobSpec], paths: list[Any]) -> TrainConfig:
    """The shared TrainConfig of a cohort for harness.training.loop.run_jobs (one checkpoint path or
    None per member), after refusing what cannot train together. Torch-free, so the test
    stand-in for run_jobs (tests/helpers/fault_runner.py) refuses exactly what the real one does."""
    if not specs:
        raise HarnessError("run_jobs needs at least one job")
    if len(paths) != len(specs):
        raise HarnessError(f"{len(specs)} jobs but {len(paths)} checkpoint paths; give one each")
    config = specs[0].config
    for name in ("max_epochs", "batch_size", "max_train_batches", "grad_batches"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise HarnessError(f"{name}={value} must be at least 1; fix the job's overrides")
    first = dataclasses.replace(specs[0], seed=0)
    if any(dataclasses.replace(s, seed=0) != first for s in specs[1:]):
        raise HarnessError(
            "a fused cohort must be the seeds of one cell (same model, dataset, split seed, "
            "protocol and config); run the other jobs separately"
        )
    if len({s.seed for s in specs}) != len(specs):
        raise HarnessError("a fused cohort got the same seed twice; give each member its own")
    if len(specs) > 1 and config.pipeline != "device":
        raise HarnessError(
            f"fusing {len(specs)} seeds needs pipeline=device (this cell has pipeline="
            f"{config.pipeline}); enqueue with --set pipeline=device or run without fusing"
        )
    return config
