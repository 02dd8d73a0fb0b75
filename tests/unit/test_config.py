"""Protocols and overrides: what resolve_config accepts, refuses and turns on."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.experiment.config import QUIRKS, JobSpec, TrainConfig, resolve_config


def test_paper_protocol_is_table_1():
    config = resolve_config("paper", "cifar10", "resnet18")
    assert (config.lr, config.weight_decay, config.batch_size, config.max_epochs) == (
        1e-3,
        1e-4,
        128,
        100,
    )
    assert (config.lr_factor, config.lr_patience, config.min_lr, config.es_patience) == (
        0.2,
        3,
        1e-7,
        7,
    )
    assert config.quirks == {}
    assert resolve_config("paper", "padufes20", "resnet18").batch_size == 64


def test_reference_code_turns_every_quirk_on_and_each_can_be_set_alone():
    config = resolve_config("reference-code", "cifar10", "gradattn_nope")
    assert set(config.quirks) == set(QUIRKS)
    assert config.model == {"d_model": 32, "nhead": 16, "dim_feedforward": 2}
    assert resolve_config("reference-code", "svhn", "resnet18").data == {"merge_extra": True}
    # the small encoder applies only on the four datasets where the notebooks used it
    assert resolve_config("reference-code", "fashionmnist", "gradattn_nope").model == {}
    alone = resolve_config("paper", "cifar10", "resnet18", {"quirk.last_epoch_weights": True})
    assert alone.quirks == {"last_epoch_weights": True}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": 1e-3}, "unknown override 'learning_rate'; valid keys: batch_size"),
        ({"max_epochs": 2.5}, "max_epochs=2.5 has the wrong type"),
        ({"quirk.last_epoch_weights": "yes"}, "must be true or false"),
        ({"model.d_model": 32}, "model.d_model does not apply to resnet18; valid: none"),
        ({"pipeline": "gpu"}, "unknown pipeline 'gpu'; valid: loader, device"),
    ],
)
def test_bad_overrides_are_refused_with_the_fix(overrides, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(")):
        resolve_config("paper", "digits", "resnet18", overrides)


def test_unknown_protocol_lists_the_valid_ones():
    with pytest.raises(HarnessError, match="valid: paper, reference-code"):
        resolve_config("papr", "digits", "resnet18")


def test_job_key_changes_with_what_changes_the_result_only():
    config = resolve_config("paper", "digits", "gradattn_rope", {"model.d_model": 64})
    spec = JobSpec("gradattn_rope", "digits", 42, 42, "paper", config)
    same = JobSpec(
        "gradattn_rope", "digits", 42, 42, "paper", TrainConfig.from_dict(config.to_dict())
    )
    assert spec.key() == same.key()
    assert spec.key() != JobSpec("gradattn_rope", "digits", 43, 42, "paper", config).key()
    assert spec.key() != JobSpec("gradattn_rope", "digits", 42, 7, "paper", config).key()
    other = resolve_config("paper", "digits", "gradattn_rope", {"lr": 3e-4, "model.d_model": 64})
    assert spec.key() != JobSpec("gradattn_rope", "digits", 42, 42, "paper", other).key()


def test_quirk_applicability_matches_where_each_quirk_acts():
    from harness.datasets.transforms import CORRUPTED_SETS
    from harness.experiment.config import CORRUPT_IMAGE_DATASETS, quirk_applies

    assert CORRUPT_IMAGE_DATASETS == CORRUPTED_SETS
    assert quirk_applies("corrupt_train_images", "cifar10", "resnet18")
    assert not quirk_applies("corrupt_train_images", "digits", "resnet18")
    assert quirk_applies("small_nope_encoder", "pcam", "gradattn_nope")
    assert not quirk_applies("small_nope_encoder", "pcam", "gradattn_rope")
    assert not quirk_applies("small_nope_encoder", "svhn", "gradattn_nope")
    assert quirk_applies("svhn_merge_extra", "svhn", "se_resnet18")
    assert quirk_applies("last_epoch_weights", "digits", "resnet18")
    with pytest.raises(HarnessError, match="unknown quirk 'x'"):
        quirk_applies("x", "digits", "resnet18")


def test_hparams_source_is_part_of_the_key_and_checked():
    paper = resolve_config("paper", "digits", "resnet18")
    tuned = resolve_config("paper", "digits", "resnet18", {"hparams": "tuned"})
    assert paper.hparams == "paper" and tuned.hparams == "tuned"
    keys = {JobSpec("resnet18", "digits", 1, 42, "paper", c).key() for c in (paper, tuned)}
    assert len(keys) == 2
    with pytest.raises(HarnessError, match="unknown hparams source 'best'"):
        resolve_config("paper", "digits", "resnet18", {"hparams": "best"})
