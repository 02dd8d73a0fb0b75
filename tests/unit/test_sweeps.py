"""Sweeps: a grid varies any setting as a product (idempotent keys), and the report's arms
group runs by the keys that vary, never pooling two settings into one cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.experiment.config import resolve_config
from harness.experiment.grids import load_grid_file, parse_sweep, resolve_grid
from harness.report.arms import Arm, arm_column, setting_text, split_arms
from harness.report.load import results_from_rows


def _grid_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(text, encoding="utf-8")
    return path


SWEEP = """
name: s
models: [resnet18, gradattn_rope]
datasets: [digits]
seeds: [1, 2, 3]
overrides: {max_epochs: 2}
sweep: {lr: [0.1, 0.01], weight_decay: [0, 5e-4]}
"""


def test_a_sweep_is_the_product_of_its_lists_and_its_keys_are_stable(tmp_path):
    grid = load_grid_file(_grid_file(tmp_path, SWEEP))
    assert grid.settings() == [
        {"lr": 0.1, "weight_decay": 0}, {"lr": 0.1, "weight_decay": 0.0005},
        {"lr": 0.01, "weight_decay": 0}, {"lr": 0.01, "weight_decay": 0.0005},
    ]  # fmt: skip  -- 5e-4 (YAML 1.1 text) read as the number
    specs = grid.jobs()
    assert len(specs) == 4 * 2 * 3 and len({s.key() for s in specs}) == 24
    assert {(s.config.lr, s.config.weight_decay) for s in specs} == {
        (0.1, 0.0), (0.1, 0.0005), (0.01, 0.0), (0.01, 0.0005)}  # fmt: skip
    assert all(s.config.max_epochs == 2 for s in specs)
    # Idempotent: the same file gives the same keys; a setting equal to --set's gives its key.
    assert [s.key() for s in load_grid_file(_grid_file(tmp_path, SWEEP)).jobs()] == [
        s.key() for s in specs]  # fmt: skip
    plain = resolve_grid("demo", seeds=1, overrides={"lr": 0.1, "weight_decay": 0})
    swept = resolve_grid("demo", seeds=1, sweep={"lr": (0.1, 0.2), "weight_decay": (0,)})
    assert {s.key() for s in plain.jobs()} < {s.key() for s in swept.jobs()}


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("[lr, 0.1]", "'sweep' must be a mapping such as"),
        ("{lr: 0.1}", "sweep 'lr' must be a non-empty list of values, got 0.1"),
        ("{lr: []}", "sweep 'lr' must be a non-empty list"),
        ("{lr: [0.1, 0.1]}", "sweep 'lr' repeats a value"),
        ("{lr: [[0.1]]}", "values must be numbers, words or true/false"),
        ("{hparams: [paper, tuned]}", "hparams cannot be swept; use --hparams paper|tuned"),
        ("{max_epochs: [2]}", "max_epochs is both in 'overrides' and in 'sweep'"),
        ("{nosuch: [1, 2]}", "unknown override 'nosuch'"),
        ("{lr: [0.1, -1]}", "(sweep setting lr=-1) setting lr=-1.0 refused"),
        ("{model.d_model: [32, 64]}", "model.d_model does not apply to resnet18"),
    ],
)
def test_a_bad_sweep_is_one_line_naming_the_fix(tmp_path, sweep, message):
    text = SWEEP.replace("sweep: {lr: [0.1, 0.01], weight_decay: [0, 5e-4]}", f"sweep: {sweep}")
    with pytest.raises(HarnessError) as err:
        load_grid_file(_grid_file(tmp_path, text))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_huge_product_and_a_key_in_set_and_sweep_are_refused():
    with pytest.raises(HarnessError, match="makes 1331 settings"):
        parse_sweep({k: list(range(11)) for k in ("lr", "min_lr", "lr_factor")})
    with pytest.raises(HarnessError, match="lr is given to both --set and --sweep"):
        resolve_grid("demo", overrides={"lr": 0.1}, sweep={"lr": (0.1, 0.2)})


def _row(job_id, model, seed, protocol="paper", hparams="paper", **settings):
    config = resolve_config(protocol, "digits", model, {"max_epochs": 2, **settings})
    if hparams == "tuned":
        config = resolve_config(protocol, "digits", model, {"max_epochs": 2, "hparams": "tuned",
                                                           **settings})  # fmt: skip
    data = config.to_dict()
    return {"job_id": job_id, "key": f"k{job_id}", "grid": "g", "model": model,
            "dataset": "digits", "seed": seed, "split_seed": 42, "protocol": protocol,
            "quirks": data["quirks"], "hparams": hparams, "config": data, "top1": 0.5}  # fmt: skip


def _settings(rows) -> dict[tuple, list[int]]:
    arms = split_arms(results_from_rows(rows))
    return {arm.setting: sorted(frame["job_id"]) for arm, frame in arms.items()}


def test_runs_are_grouped_by_the_keys_that_vary_only():
    rows = [_row(i, m, s, lr=lr, batch_size=32)  # batch_size=32 everywhere: not a setting
            for i, (m, s, lr) in enumerate(
                [(m, s, lr) for lr in (0.1, 0.01) for m in ("resnet18", "gradattn_rope")
                 for s in (1, 2)], start=1)]  # fmt: skip
    assert _settings(rows) == {(("lr", "0.01"),): [5, 6, 7, 8], (("lr", "0.1"),): [1, 2, 3, 4]}
    arm = next(iter(split_arms(results_from_rows(rows))))
    assert arm.label == "paper, lr=0.01" and not arm.is_base and arm.has_section
    assert arm.anchor == "p-paper-lr-0_01" and arm.matches({"lr": 1e-2})
    assert not arm.matches({"lr": 0.1}) and not arm.matches({"weight_decay": 0})
    # One setting for all: the base arm, exactly as before sweeps existed (the demo's case).
    same = [_row(i, "resnet18", i, batch_size=32) for i in (1, 2)]
    assert _settings(same) == {(): [1, 2]}


def test_the_default_value_of_a_swept_key_is_named_and_a_lone_set_splits_too():
    rows = [_row(1, "resnet18", 1), _row(2, "resnet18", 2), _row(3, "resnet18", 1, lr=0.01)]
    assert _settings(rows) == {(("lr", "0.001"),): [1, 2], (("lr", "0.01"),): [3]}


def test_a_key_that_does_not_apply_to_a_model_shares_its_runs_with_every_setting():
    rows = [_row(1, "resnet18", 1), _row(2, "resnet18", 2),
            _row(3, "gradattn_rope", 1, **{"model.d_model": 32}),
            _row(4, "gradattn_rope", 1, **{"model.d_model": 64}),
            _row(5, "gradattn_rope", 2, **{"model.d_model": 64})]  # fmt: skip
    # ResNet-18 has no d_model: its runs are the baseline of both GradAttn settings.
    assert _settings(rows) == {(("model.d_model", "32"),): [1, 2, 3],
                               (("model.d_model", "64"),): [1, 2, 4, 5]}  # fmt: skip
    frame = results_from_rows(rows)
    labels = dict(zip(frame["job_id"], (arm.label for arm in arm_column(frame)), strict=True))
    assert labels == {1: "paper", 2: "paper", 3: "paper, model.d_model=32",
                      4: "paper, model.d_model=64", 5: "paper, model.d_model=64"}  # fmt: skip


def test_tuned_values_and_protocol_defaults_are_not_settings():
    # Tuned arms differ in lr by cell by design; the reference-code quirk that shrinks the
    # No-PE encoder on some datasets is the protocol's default there, not a departure.
    tuned = [_row(1, "resnet18", 1, hparams="tuned", lr=0.003),
             _row(2, "gradattn_rope", 1, hparams="tuned", lr=0.0007)]  # fmt: skip
    arms = split_arms(results_from_rows(tuned))
    assert [(a.hparams, a.setting) for a in arms] == [("tuned", ())]
    ref = [_row(1, "gradattn_nope", 1, protocol="reference-code"),
           _row(2, "resnet18", 1, protocol="reference-code")]  # fmt: skip
    assert list(split_arms(results_from_rows(ref))) == [Arm("reference-code")]


def test_setting_text_compares_numbers_not_spellings():
    assert setting_text(5e-4) == setting_text("5e-4") == setting_text(0.0005) == "0.0005"
    assert setting_text(0) == "0" and setting_text(0.0) == "0" and setting_text(32) == "32"
    assert setting_text(True) == "true" and setting_text(None) == "null"
    assert setting_text("fp32") == "fp32"
