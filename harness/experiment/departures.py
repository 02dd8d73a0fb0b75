"""How a run's effective configuration differs from its named protocol.

A run queued with `--set max_epochs=2`, a grid file's `overrides`, a sweep, tuned
hyper-parameters or a quirk switched away from its protocol's default is not a run of that
protocol. `departures(...)` lists every such key with the protocol's value and the run's, so a
job records it when it is queued and the report can say, next to any comparison with the
paper's numbers, that the runs were not the paper's (docs/PROTOCOL.md, "Departures").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.experiment.config import QUIRKS, TrainConfig, resolve_config

# How a run executes, not what it computes: the device pipeline is tested to train the same
# model as the loader pipeline (docs/PERFORMANCE.md), and determinism only fixes the order of
# floating-point sums. Neither is a departure from a protocol.
EXECUTION_KEYS = ("deterministic", "pipeline")


@dataclass(frozen=True)
class Departure:
    """One key on which a run differs from its protocol (values as stored, None: not set)."""

    key: str
    protocol_value: Any
    run_value: Any

    def text(self, protocol: str = "protocol") -> str:
        """'max_epochs=2 (paper: 100)'."""
        return f"{self.key}={show(self.run_value)} ({protocol}: {show(self.protocol_value)})"

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "protocol": self.protocol_value, "run": self.run_value}

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Departure:
        return cls(str(item["key"]), item.get("protocol"), item.get("run"))


def show(value: Any) -> str:
    """A value as a person reads it: 0.001, 5e-05, 32, true, none."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, ".6g") if math.isfinite(value) else str(value)
    return str(value)


def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """A TrainConfig dict as dotted keys: lr, model.d_model, data.medmnist_size, quirk.NAME
    (every quirk, on or off: a stored config lists only those that are on)."""
    flat = {k: v for k, v in config.items() if k not in ("model", "data", "quirks")}
    flat.update({f"model.{k}": v for k, v in (config.get("model") or {}).items()})
    flat.update({f"data.{k}": v for k, v in (config.get("data") or {}).items()})
    quirks = config.get("quirks") or {}
    flat.update({f"quirk.{name}": bool(quirks.get(name, False)) for name in QUIRKS})
    return flat


def _model_defaults(model: str) -> dict[str, Any] | None:
    """The model.* keys `model` takes, with the builder's defaults; None for an unknown model."""
    from harness import models

    if model not in models.MODEL_NAMES:
        return None
    return {f"model.{k}": v for k, v in models.default_overrides(model).items()}


def departures(
    protocol: str, dataset: str, model: str, config: TrainConfig | Mapping[str, Any]
) -> tuple[Departure, ...]:
    """Every key whose value in `config` differs from `protocol`'s for (dataset, model),
    sorted by key; () for a run of the protocol exactly as written."""
    data = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    try:
        reference = resolve_config(protocol, dataset, model).to_dict()
    except HarnessError:
        return ()  # an unknown protocol: nothing to compare with (the grid layer refuses it)
    ours, theirs = flatten(data), flatten(reference)
    known = _model_defaults(model)  # model.* keys the protocol leaves at the model's default
    builder = known or {}
    found = []
    for key in sorted(set(ours) | set(theirs)):
        if key in EXECUTION_KEYS:
            continue
        if key.startswith("model.") and known is not None and key not in known:
            continue  # a key this model does not take (an old config's): it changes nothing
        run_value = ours.get(key, builder.get(key, theirs.get(key)))
        protocol_value = theirs.get(key, builder.get(key))
        if not _same(run_value, protocol_value):
            found.append(Departure(key, protocol_value, run_value))
    return tuple(found)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return a == b


def summary(items: Iterable[Departure], protocol: str = "protocol") -> str:
    """'max_epochs=2 (paper: 100); batch_size=32 (paper: 128)' for distinct departures; the
    same key with several values (per dataset or per cell) is listed once with all of them."""
    by_key: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
    for item in items:
        runs, protocols = by_key.setdefault(item.key, ({}, {}))
        runs[show(item.run_value)] = None
        protocols[show(item.protocol_value)] = None
    return "; ".join(
        f"{key}={'/'.join(runs)} ({protocol}: {'/'.join(protocols)})"
        for key, (runs, protocols) in sorted(by_key.items())
    )


def as_json(items: Iterable[Departure]) -> list[dict[str, Any]]:
    return [item.to_json() for item in items]
