"""Arms: which runs may be compared with which.

A result row belongs to one arm: (protocol, hyper-parameter source, quirk variant). The variant
is the set of quirks whose setting differs from the protocol's default -- a quirk switched on
under `paper`, or switched off under `reference-code` (resolve_config stores only the quirks
that are on, so a missing one is off). The per-protocol tables and claims use the base arm
(paper hyper-parameters, no variant); a tuned arm gets its own section; single-switch variants
feed only the protocol-differences section, so a one-quirk experiment never moves a base cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.experiment.config import HPARAM_SOURCES, PROTOCOLS, QUIRKS

TUNED_LABEL = "tuned hyper-parameters"


@dataclass(frozen=True, order=True)
class Arm:
    protocol: str
    hparams: str = "paper"
    # (quirk, setting) pairs that differ from the protocol's default, sorted by quirk name.
    variant: tuple[tuple[str, bool], ...] = ()

    @property
    def is_base(self) -> bool:
        return self.hparams == "paper" and not self.variant

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
        return ", ".join(parts)

    @property
    def short(self) -> str:
        """A column heading: 'paper', 'paper tuned', 'reference-code +quirk'."""
        text = self.protocol + (" tuned" if self.hparams == "tuned" else "")
        for name, on in self.variant:
            text += f" {'+' if on else '−'}{name}"
        return text

    @property
    def anchor(self) -> str:
        """HTML id stem; the base arms keep the historical 'p-<protocol>'."""
        stem = f"p-{self.protocol}"
        if self.hparams != "paper":
            stem += f"-{self.hparams}"
        for name, on in self.variant:
            stem += f"-{name}-{'on' if on else 'off'}"
        return stem

    def single_switch(self) -> tuple[str, bool] | None:
        """(quirk, setting) when this arm differs from its protocol's base by exactly one quirk
        and uses the paper's hyper-parameters; else None."""
        if self.hparams != "paper" or len(self.variant) != 1:
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


def arm_column(frame: pd.DataFrame) -> list[Arm]:
    """The arm of every row of a results (or jobs) frame."""
    hparams = frame["hparams"] if "hparams" in frame.columns else ["paper"] * len(frame)
    return [
        arm_of(p, h, q) for p, h, q in zip(frame["protocol"], hparams, frame["quirks"], strict=True)
    ]


def arm_order(arm: Arm) -> tuple[int, int, int, tuple[tuple[str, bool], ...]]:
    """Sections in reading order: base arms by protocol, then tuned, then variants."""
    proto = PROTOCOLS.index(arm.protocol) if arm.protocol in PROTOCOLS else len(PROTOCOLS)
    source = (
        HPARAM_SOURCES.index(arm.hparams) if arm.hparams in HPARAM_SOURCES else len(HPARAM_SOURCES)
    )
    return (len(arm.variant) > 0, source, proto, arm.variant)


def split_arms(results: pd.DataFrame) -> dict[Arm, pd.DataFrame]:
    """Results grouped by arm, in arm_order."""
    if results.empty:
        return {}
    arms = arm_column(results)
    groups: dict[Arm, list[int]] = {}
    for position, arm in enumerate(arms):
        groups.setdefault(arm, []).append(position)
    return {arm: results.iloc[groups[arm]] for arm in sorted(groups, key=arm_order)}
