"""Arms: which runs may be compared with which.

A result row belongs to one arm: (protocol, hyper-parameter source, quirk variant, setting).
The variant is the set of quirks whose setting differs from the protocol's default -- a quirk
switched on under `paper`, or switched off under `reference-code` (resolve_config stores only
the quirks that are on, so a missing one is off). The setting is the run's value of every
configuration key that differs between runs of the same (protocol, hparams, variant): the keys
of a sweep (`sweep:` in a grid file, `enqueue --sweep`), or a `--set` given to some runs and not
to others. Runs with different settings are never pooled into one cell: each setting gets its
own section. A run to which a swept key does not apply (model.d_model for ResNet-18) belongs to
every setting of the others, since its configuration is the same in all of them.

The per-protocol tables and claims use the base arm (paper hyper-parameters, no variant, one
setting); a tuned arm and each swept setting get their own section; single-switch variants
feed only the protocol-differences section, so a one-quirk experiment never moves a base cell.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.experiment.config import HPARAM_SOURCES, PROTOCOLS, QUIRKS, resolve_config
from harness.experiment.departures import flatten

TUNED_LABEL = "tuned hyper-parameters"
# Keys a tuned arm takes from each cell's study: they differ by cell by design.
TUNED_KEYS = ("lr", "weight_decay", "model.dropout")


@dataclass(frozen=True, order=True)
class Arm:
    protocol: str
    hparams: str = "paper"
    # (quirk, setting) pairs that differ from the protocol's default, sorted by quirk name.
    variant: tuple[tuple[str, bool], ...] = ()
    # (key, value text) of the keys that vary between this arm's runs, sorted by key.
    setting: tuple[tuple[str, str], ...] = ()

    @property
    def is_base(self) -> bool:
        return self.hparams == "paper" and not self.variant and not self.setting

    def matches(self, wanted: Mapping[str, Any]) -> bool:
        """Whether this arm's setting has every key = value of `wanted` (a claim's setting)."""
        mine = dict(self.setting)
        return all(mine.get(key) == setting_text(value) for key, value in wanted.items())

    @property
    def has_section(self) -> bool:
        """Base and tuned arms get a full section (tables, claims, figures); variants do not."""
        return not self.variant

    @property
    def label(self) -> str:
        """'paper', 'paper, tuned hyper-parameters', 'reference-code, quirk.x=false'."""
        parts = [self.protocol]
        if self.hparams != "paper":
            parts.append(TUNED_LABEL if self.hparams == "tuned" else f"{self.hparams} hparams")
        parts += [f"quirk.{name}={str(on).lower()}" for name, on in self.variant]
        parts += [f"{key}={value}" for key, value in self.setting]
        return ", ".join(parts)

    @property
    def short(self) -> str:
        """A column heading: 'paper', 'paper tuned', 'reference-code +quirk'."""
        text = self.protocol + (" tuned" if self.hparams == "tuned" else "")
        for name, on in self.variant:
            text += f" {'+' if on else '−'}{name}"
        for key, value in self.setting:
            text += f" {key}={value}"
        return text

    @property
    def anchor(self) -> str:
        """HTML id stem; the base arms keep the historical 'p-<protocol>'."""
        stem = f"p-{self.protocol}"
        if self.hparams != "paper":
            stem += f"-{self.hparams}"
        for name, on in self.variant:
            stem += f"-{name}-{'on' if on else 'off'}"
        for key, value in self.setting:
            stem += "-" + re.sub(r"[^A-Za-z0-9_-]+", "_", f"{key}-{value}")
        return stem

    def single_switch(self) -> tuple[str, bool] | None:
        """(quirk, setting) when this arm differs from its protocol's base by exactly one quirk
        and uses the paper's hyper-parameters; else None."""
        if self.hparams != "paper" or len(self.variant) != 1 or self.setting:
            return None
        return self.variant[0]


def protocol_default(protocol: str) -> bool:
    """Every quirk's default setting under `protocol`: on under reference-code, off otherwise."""
    return protocol == "reference-code"


def arm_of(protocol: str, hparams: Any, quirks: Mapping[str, Any] | None) -> Arm:
    """The arm of one result row. Rows without an hparams field (older databases) are paper."""
    on = {name for name, value in (quirks or {}).items() if value}
    default = protocol_default(protocol)
    variant = tuple(
        (name, name in on) for name in sorted(QUIRKS) if (name in on) != default
    )  # a quirk the harness does not know any more is ignored, as resolve_config would
    source = hparams if isinstance(hparams, str) and hparams else "paper"
    return Arm(protocol, source, variant)


def setting_text(value: Any) -> str:
    """A setting's value as the report shows and compares it: 0.01, 0.0005, 32, true, null.
    Numbers written as text (5e-4) read as numbers; 0 and 0.0 are the same setting."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return format(float(value), ".12g") if isinstance(value, float) else str(value)
    return str(value)


def flat_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored TrainConfig as dotted keys (lr, model.d_model, data.medmnist_size); quirks are
    the arm's variant, not its setting, and hparams is its own field."""
    flat = flatten(config or {})
    return {k: v for k, v in flat.items() if k != "hparams" and not k.startswith("quirk.")}


@functools.lru_cache(maxsize=512)
def _defaults(protocol: str, dataset: str, model: str) -> tuple[tuple[str, str], ...]:
    """The protocol's own setting of every key for (dataset, model), as setting_text, including
    the model builder's defaults for the architecture keys it accepts."""
    from harness import models

    try:
        flat = flat_config(resolve_config(protocol, dataset, model).to_dict())
    except HarnessError:
        return ()
    if model in models.MODEL_NAMES:
        for key, value in models.default_overrides(model).items():
            flat.setdefault(f"model.{key}", value)
    return tuple(sorted((k, setting_text(v)) for k, v in flat.items()))


def _applies(key: str, dataset: str, model: str) -> bool:
    """Whether `key` means anything for (dataset, model): model.* keys the model accepts,
    data.* options its dataset takes, every plain key."""
    from harness import datasets, models

    head, _, rest = key.partition(".")
    if head == "model" and rest:
        return model in models.MODEL_NAMES and rest in models.default_overrides(model)
    if head == "data" and rest:
        return dataset in datasets.DATASET_NAMES and rest in datasets.get_source(dataset).options
    return True


def _values(row: Mapping[str, Any]) -> dict[str, str] | None:
    """A run's effective value of every key (None for a run stored without its config)."""
    config = row.get("config")
    if not config:
        return None
    values = dict(_defaults(row["protocol"], row["dataset"], row["model"]))
    values.update({k: setting_text(v) for k, v in flat_config(config).items()})
    return values


def _departs(row: Mapping[str, Any], values: Mapping[str, str], key: str) -> str:
    """The run's value of `key` where it departs from its protocol's default, else '='."""
    default = dict(_defaults(row["protocol"], row["dataset"], row["model"])).get(key)
    return "=" if values.get(key) == default else values.get(key, "=")


def arm_settings(frame: pd.DataFrame, pool: tuple[str, ...] = ()) -> list[list[Arm]]:
    """Every row's arms: one, or for a run that a swept key does not apply to, one per setting
    of the other runs that it agrees with. Keys in `pool` (`report --pool`) never split."""
    base = _base_arms(frame)
    records = frame.to_dict("records")
    values = [_values(rec) for rec in records]
    swept: dict[Arm, list[str]] = {}
    for arm in dict.fromkeys(base):
        rows = [i for i, b in enumerate(base) if b == arm and values[i] is not None]
        keys = sorted({k for i in rows for k in values[i]})  # type: ignore[union-attr]
        skip = (*pool, *(TUNED_KEYS if arm.hparams == "tuned" else ()))
        swept[arm] = [
            key for key in keys if key not in skip and len({
                _departs(records[i], values[i], key)  # type: ignore[arg-type]
                for i in rows if _applies(key, records[i]["dataset"], records[i]["model"])
            }) > 1
        ]  # fmt: skip
    own: list[tuple[tuple[str, str], ...] | None] = []
    for i, rec in enumerate(records):
        if values[i] is None:
            own.append(None)
            continue
        own.append(tuple((k, values[i][k]) for k in swept[base[i]]  # type: ignore[index]
                         if _applies(k, rec["dataset"], rec["model"])))  # fmt: skip
    full: dict[Arm, set[tuple[tuple[str, str], ...]]] = {}
    for i, setting in enumerate(own):
        if setting is not None and len(setting) == len(swept[base[i]]):
            full.setdefault(base[i], set()).add(setting)
    arms: list[list[Arm]] = []
    for i, setting in enumerate(own):
        arm = base[i]
        if setting is None or len(setting) == len(swept[arm]) or not full.get(arm):
            arms.append([replace(arm, setting=setting or ())])
            continue
        # A key that does not apply to this run: it joins each setting it agrees with.
        mine = dict(setting)
        joins = [s for s in sorted(full[arm]) if all(dict(s)[k] == v for k, v in mine.items())]
        arms.append([replace(arm, setting=s) for s in joins] or [replace(arm, setting=setting)])
    return arms


def _base_arms(frame: pd.DataFrame) -> list[Arm]:
    hparams = frame["hparams"] if "hparams" in frame.columns else ["paper"] * len(frame)
    return [
        arm_of(p, h, q) for p, h, q in zip(frame["protocol"], hparams, frame["quirks"], strict=True)
    ]


def arm_column(frame: pd.DataFrame) -> list[Arm]:
    """The arm of every row of a results (or jobs) frame (a run shared by several settings
    shows the keys they agree on)."""
    if "config" not in frame.columns:
        return _base_arms(frame)
    return [_common(arms) for arms in arm_settings(frame)]


def _common(arms: list[Arm]) -> Arm:
    """One arm for a run shared by several settings: the keys on which they all agree."""
    shared = set(arms[0].setting).intersection(*(set(a.setting) for a in arms[1:]))
    return replace(arms[0], setting=tuple(sorted(shared)))


def arm_order(arm: Arm) -> tuple[Any, ...]:
    """Sections in reading order: base arms by protocol, then tuned, then variants."""
    proto = PROTOCOLS.index(arm.protocol) if arm.protocol in PROTOCOLS else len(PROTOCOLS)
    source = (
        HPARAM_SOURCES.index(arm.hparams) if arm.hparams in HPARAM_SOURCES else len(HPARAM_SOURCES)
    )
    return (len(arm.variant) > 0, source, proto, arm.variant, arm.setting)


def split_arms(results: pd.DataFrame, pool: tuple[str, ...] = ()) -> dict[Arm, pd.DataFrame]:
    """Results grouped by arm, in arm_order (runs differing only in `pool` keys together)."""
    if results.empty:
        return {}
    per_row = arm_settings(results, pool) if "config" in results.columns else [
        [arm] for arm in _base_arms(results)
    ]
    groups: dict[Arm, list[int]] = {}
    for position, arms in enumerate(per_row):
        for arm in arms:
            groups.setdefault(arm, []).append(position)
    return {arm: results.iloc[groups[arm]] for arm in sorted(groups, key=arm_order)}
