"""Do the fast paths train the same models as the authors'-style pipeline? Over seeds, one device.

    python benchmarks/equivalence.py [--device cuda] [--dataset digits] [--model resnet18]
        [--seeds 5] [--set KEY=VALUE ...] [--data DIR] [--out benchmarks/results]

Three arms on the same cell, seeds and protocol (issue 6, deliverable 3):
- loader: pipeline=loader, precision=fp32 -- the authors' way, the paper grid's default;
- device: pipeline=device, precision=bf16 on CUDA (CUDA graph, channels_last), fp32 on the
  CPU, one job per seed (harness.training.loop.run_job);
- fused:  the same settings, all seeds as one fused cohort (harness.training.loop.run_jobs).
Per arm: top-1, ECE, best epoch and epochs run per seed, and the mean training seconds per
epoch. Per fast arm against loader: the mean paired difference (arm - loader) of each metric and
the seed spread (max - min over both arms' seeds); the criterion is |mean difference| <= spread.
Writes one JSON file (device, torch version, git commit, command line, every number).

Digits is embedded (no download): it checks plumbing on real data without augmentation. A
dataset with Table 2 augmentation (FashionMNIST, CIFAR-10, BloodMNIST) also tests the batched
GPU augmentation against torchvision's, in distribution.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("top1", "ece", "best_epoch", "epochs_run")
ARMS = ("loader", "device", "fused")


def arm_settings(arm: str, device: str) -> dict[str, str]:
    """bf16 for the fast arms on CUDA; fp32 on the CPU, whose bf16 convolutions are emulated
    (about 10x slower than fp32 there) and say nothing about a GPU's."""
    if arm == "loader":
        return {"pipeline": "loader", "precision": "fp32"}
    return {"pipeline": "device", "precision": "bf16" if device.startswith("cuda") else "fp32"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", default="data", help="dataset root (digits needs none)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return parser.parse_args(argv)


def summarise(outcome: Any) -> dict[str, float]:
    return {
        "top1": float(outcome.metrics["top1"]),
        "ece": float(outcome.metrics["ece"]),
        "best_epoch": float(outcome.best_epoch),
        "epochs_run": float(outcome.epochs_run),
        "train_seconds_per_epoch": float(outcome.train_seconds),
    }


def compare(base: list[dict], arm: list[dict]) -> dict[str, dict[str, float | bool]]:
    """Mean paired difference (arm - base) and the seed spread of both arms, per metric."""
    rows = {}
    for metric in METRICS:
        pairs = [a[metric] - b[metric] for a, b in zip(arm, base, strict=True)]
        values = [r[metric] for r in base + arm]
        spread = max(values) - min(values)
        mean = statistics.fmean(pairs)
        rows[metric] = {"mean_difference": mean, "spread": spread, "within": abs(mean) <= spread}
    return rows


def main(argv: list[str] | None = None) -> int:
    from harness.commands.bench import environment
    from harness.commands.enqueue import parse_overrides
    from harness.experiment.config import JobSpec, resolve_config
    from harness.training.loop import run_job, run_jobs

    args = parse(argv)
    overrides = parse_overrides(args.set)
    seeds = list(range(42, 42 + args.seeds))

    def spec(seed: int, arm: str) -> JobSpec:
        settings = arm_settings(arm, args.device)
        config = resolve_config("paper", args.dataset, args.model, {**overrides, **settings})
        return JobSpec(args.model, args.dataset, seed, 42, "paper", config)

    runs: dict[str, list[dict]] = {}
    wall: dict[str, float] = {}
    for arm in ARMS:
        started = time.perf_counter()
        common = {"device": args.device, "data_root": Path(args.data)}
        if arm == "fused":
            outcomes = run_jobs([spec(s, arm) for s in seeds], **common)
        else:
            outcomes = [run_job(spec(s, arm), **common) for s in seeds]
        wall[arm] = time.perf_counter() - started
        runs[arm] = [summarise(o) for o in outcomes]
        print(f"{arm}: {wall[arm]:.1f} s, top-1 {[round(r['top1'], 4) for r in runs[arm]]}")
    comparisons = {arm: compare(runs["loader"], runs[arm]) for arm in ("device", "fused")}
    for arm, rows in comparisons.items():
        for metric, row in rows.items():
            verdict = "within" if row["within"] else "OUTSIDE"
            print(
                f"{arm} - loader, {metric}: mean {row['mean_difference']:+.4f}, "
                f"seed spread {row['spread']:.4f} ({verdict})"
            )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) / f"equivalence-{args.dataset}-{args.model}-{args.device}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "schema": "harness-equivalence/1",
                "command": ["python", "benchmarks/equivalence.py", *(argv or sys.argv[1:])],
                "environment": environment(args.device),
                "cell": {"dataset": args.dataset, "model": args.model, "overrides": overrides},
                "seeds": seeds,
                "arms": {
                    arm: {
                        "settings": arm_settings(arm, args.device),
                        "seconds": wall[arm],
                        "runs": runs[arm],
                    }
                    for arm in ARMS
                },
                "against_loader": comparisons,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
