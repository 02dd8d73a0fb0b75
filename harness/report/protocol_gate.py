"""Runs that depart from their protocol are never read as a test of the paper.

A section whose runs changed any protocol key (max_epochs, max_train_batches, batch size,
tuned hyper-parameters, a quirk, ...: harness.experiment.departures) still gets its tables,
marks and claims, but:

- every comparison with the paper's numbers is labelled "not the paper's protocol: <keys>";
  the baseline checks give the gap as a number and no "reproduced"/"not reproduced" word;
- the paper's claims get no SUPPORTED or CONTRADICTED verdict from such runs: each becomes
  UNTESTABLE, with what was changed, and keeps what its comparison between models found
  under the same change (`verdict_under_departure`: fair between the models, not a test of
  the paper). A level claim (a model's own value against the paper's) keeps nothing.

Claims from the user's own file (`report --claims`) are about the user's runs: they keep their
verdicts and carry the same label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.experiment.departures import Departure, summary
from harness.report.verdicts import UNTESTABLE


@dataclass(frozen=True)
class Departures:
    """What a section's runs changed from their protocol."""

    protocol: str
    items: tuple[Departure, ...] = ()
    unknown: int = 0  # runs without a record (imported from another tool)

    @property
    def keys(self) -> list[str]:
        return sorted({item.key for item in self.items})

    @property
    def departs(self) -> bool:
        return bool(self.items)

    @property
    def changes_architecture(self) -> bool:
        """Whether a departure can change a parameter count (training settings cannot)."""
        return any(key.startswith(("model.", "quirk.small_nope_encoder")) for key in self.keys)

    @property
    def label(self) -> str:
        """'not the paper's protocol: max_epochs, max_train_batches'."""
        return f"{not_the(self.protocol)}: {', '.join(self.keys)}"

    @property
    def title(self) -> str:
        """'Not the paper's protocol'."""
        text = not_the(self.protocol)
        return text[0].upper() + text[1:]

    @property
    def detail(self) -> str:
        """'max_epochs=2 (paper: 100); max_train_batches=40 (paper: none)'."""
        return summary(self.items, self.protocol)


def not_the(protocol: str) -> str:
    return "not the paper's protocol" if protocol == "paper" else f"not the {protocol} protocol"


def section_departures(frame: pd.DataFrame, protocol: str) -> Departures:
    """The distinct departures of a section's runs (the `departures` column of load.py)."""
    items: dict[Departure, None] = {}
    unknown = 0
    column = frame["departures"] if "departures" in frame.columns else [None] * len(frame)
    for recorded in column:
        if recorded is None:
            unknown += 1
            continue
        for item in recorded:
            items[Departure.from_json(item)] = None
    ordered = tuple(sorted(items, key=lambda d: (d.key, str(d.run_value), str(d.protocol_value))))
    return Departures(protocol, ordered, unknown)


def table_note(departures: Departures) -> str:
    return (
        f"{departures.title}: these runs changed {departures.detail}. The paper's values are "
        "shown for reference: a difference from them is not a test of the paper. The marks "
        "compare models run with the same changes, which is fair between them."
    )


def baseline_word(departures: Departures | None, same: bool, gap_text: str) -> str:
    """The end of a baseline-check item: reproduced / not reproduced, or the label."""
    if departures is not None and departures.departs:
        return f"{departures.label}, so not a test of the paper (gap {gap_text})"
    return "reproduced" if same else f"not reproduced ({gap_text})"


def gate(claim: Any, departures: Departures, level: bool) -> Any:
    """One ClaimVerdict as UNTESTABLE, keeping its comparison's verdict under the departure
    (`level`: a model's own value against a stated one, which keeps nothing)."""
    head = f"Not a test of the paper: these runs changed {departures.detail}."
    if level or claim.verdict == UNTESTABLE:
        why = f"{head} A level is compared with the paper's value only under its protocol."
        if claim.verdict == UNTESTABLE:
            why = f"{head} Also: {claim.reason}"
    else:
        why = (
            f"{head} Between the models, under the same changes: {claim.verdict} "
            f"({claim.reason})."
        )
    parts = [_gate_part(part, level) for part in claim.parts]
    notes = [*claim.notes, head]
    extra = {**claim.extra, "departures": departures.detail,
             "verdict_under_departure": None if level else claim.verdict}  # fmt: skip
    return dataclasses.replace(claim, verdict=UNTESTABLE, reason=why, parts=parts, notes=notes,
                               extra=extra)  # fmt: skip


def _gate_part(part: Mapping[str, Any], level: bool) -> dict[str, Any]:
    gated = dict(part)
    gated["verdict_under_departure"] = None if level else part.get("verdict")
    gated["verdict"] = UNTESTABLE
    return gated
