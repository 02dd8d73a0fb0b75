"""harness.experiment.departures: what a run changed from its named protocol."""

from __future__ import annotations

from harness.experiment.config import resolve_config
from harness.experiment.departures import Departure, departures, summary


def _keys(protocol, dataset, model, **overrides):
    config = resolve_config(protocol, dataset, model, overrides)
    return {d.key: (d.protocol_value, d.run_value) for d in departures(protocol, dataset, model, config)}


def test_a_run_of_the_protocol_as_written_departs_in_nothing():
    assert _keys("paper", "cifar10", "resnet18") == {}
    assert _keys("paper", "padufes20", "gradattn_rope") == {}  # batch 64 is the protocol's there
    assert _keys("reference-code", "cifar10", "gradattn_nope") == {}  # its small encoder too
    # How a run executes is no departure: the device pipeline and determinism.
    assert _keys("paper", "cifar10", "resnet18", pipeline="device", deterministic=False) == {}


def test_every_changed_key_is_listed_with_both_values():
    assert _keys("paper", "cifar10", "resnet18", max_epochs=2, max_train_batches=40) == {
        "max_epochs": (100, 2), "max_train_batches": (None, 40)}  # fmt: skip
    assert _keys("paper", "padufes20", "resnet18", batch_size=128) == {"batch_size": (64, 128)}
    # A model key the protocol leaves at the builder's default: that default is the protocol's.
    assert _keys("paper", "cifar10", "gradattn_rope", **{"model.d_model": 32}) == {
        "model.d_model": (256, 32)}  # fmt: skip  -- Table 1: d_model 256
    # A quirk switched on under paper, or off under reference-code.
    assert _keys("paper", "svhn", "resnet18", **{"quirk.last_epoch_weights": True}) == {
        "quirk.last_epoch_weights": (False, True)}  # fmt: skip
    off = _keys("reference-code", "svhn", "resnet18", **{"quirk.last_epoch_weights": False})
    assert off == {"quirk.last_epoch_weights": (True, False)}
    tuned = _keys("paper", "cifar10", "resnet18", hparams="tuned", lr=0.003)
    assert tuned == {"hparams": ("paper", "tuned"), "lr": (0.001, 0.003)}
    assert _keys("paper", "cifar10", "resnet18", precision="bf16") == {"precision": ("fp32", "bf16")}


def test_the_summary_names_each_key_once_with_all_its_values():
    items = [Departure("max_epochs", 100, 2), Departure("batch_size", 128, 32),
             Departure("batch_size", 64, 32), Departure("max_epochs", 100, 2)]  # fmt: skip
    assert summary(items, "paper") == "batch_size=32 (paper: 128/64); max_epochs=2 (paper: 100)"
    assert Departure("lr", 0.001, 5e-05).text("paper") == "lr=5e-05 (paper: 0.001)"
    assert Departure.from_json(Departure("a", None, True).to_json()) == Departure("a", None, True)
