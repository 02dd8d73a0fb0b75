"""`harness bench`: time the authors' pipeline against the fast path; packing; grid projection.

    harness bench [--device cuda|cpu] [--model resnet18] [--dataset-shape fashionmnist]
                  [--grid paper|none] [--steps N] [--slots 1,4,8,12] [--mps]
                  [--fused 1,4,8,12] [--grid-fused] [--out benchmarks/results/]

Writes one timestamped JSON file (device, torch version, git commit, command line, every
number) and prints a summary. See benchmarks/README.md and docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.commands._common import add_list_option
from harness.errors import HarnessError

SCHEMA = "harness-bench/1"
GRIDS = ("paper", "none")
DEFAULT_OUT = "benchmarks/results"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the authors' input pipeline against the fast path on one device",
        description="Time one training job with the authors' pipeline (DataLoader + PIL "
        "transforms, fp32, eager) and with the fast path (device-resident uint8, batched "
        "augmentation, bf16, channels_last, CUDA graph), packing of concurrent jobs (optionally "
        "under CUDA MPS), fused seed cohorts, and a projection of the grid's wall time. "
        "Synthetic data of the dataset's shape.",
    )
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)"
    )
    parser.add_argument(
        "--model", default="resnet18", help="model for the pipeline and packing runs"
    )
    parser.add_argument(
        "--dataset-shape", default="fashionmnist", help="dataset whose shape to time"
    )
    parser.add_argument(
        "--grid", default="paper", choices=GRIDS, help="grid to project (none: skip)"
    )
    add_list_option(parser, "--grid-models", default=None, help="project only these models")
    add_list_option(
        parser, "--grid-datasets", default=None, help="project only these datasets"
    )
    parser.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed steps before each measurement"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: Table 1's per dataset"
    )
    add_list_option(
        parser,
        "--slots",
        default=None,
        help="concurrent jobs to time (default 1,4,8,12 on CUDA, 1,2 on the CPU; 0 skips packing)",
    )
    parser.add_argument(
        "--mps",
        action="store_true",
        help="pack the jobs under a private CUDA MPS daemon (CUDA only; the JSON says if used)",
    )
    add_list_option(
        parser,
        "--fused",
        default=None,
        help="seeds per fused cohort to time (default 1,4,8,12 on CUDA, 1,2 on the CPU; 0 skips)",
    )
    parser.add_argument(
        "--grid-fused",
        action="store_true",
        help="project the grid at the fused rate of the largest --fused size (at most --seeds)",
    )
    parser.add_argument(
        "--precision",
        default=None,
        choices=("fp32", "bf16"),
        help="fast path precision (default bf16 on CUDA, fp32 on the CPU)",
    )
    parser.add_argument("--no-graph", action="store_true", help="fast path without CUDA graphs")
    parser.add_argument("--no-channels-last", action="store_true", help="fast path in NCHW")
    parser.add_argument(
        "--loader-workers",
        type=int,
        default=2,
        help="DataLoader workers of the authors' pipeline (worker processes are --slots)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per job (default: torch's; packed jobs share the cores)",
    )
    parser.add_argument("--data-size", type=int, default=4096, help="synthetic images per job")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per job in the projection")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per cell in the projection")
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"result folder (default {DEFAULT_OUT}/)"
    )
    parser.set_defaults(func=run)


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if value < minimum:
        raise HarnessError(f"--{name} must be at least {minimum} (got {value})")
    return value


def _int_list(option: str, text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HarnessError(
            f"--{option} {text!r} is not a comma list of integers (e.g. 1,4,8)"
        ) from None
    if any(v < 0 for v in values):
        raise HarnessError(f"--{option} {text!r} has a negative count")
    return [v for v in values if v > 0]


def _joined(items: list[str] | None) -> str | None:
    """A list option's items as the comma list the parsers below read (None: not given)."""
    return ",".join(items) if items else None


def _names(option: str, text: str | None, valid: tuple[str, ...]) -> tuple[str, ...]:
    if text is None:
        return valid
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        what = f"unknown {', '.join(unknown)}" if unknown else "is empty"
        raise HarnessError(f"--{option} {what}; valid: {', '.join(valid)}")
    return names


def _resolve_device(text: str | None) -> str:
    import torch

    if text is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"--device {text}: no CUDA device is visible here; use --device cpu")
    if not (text == "cpu" or text.startswith("cuda")):
        raise HarnessError(f"--device {text!r} is not cpu, cuda or cuda:N")
    return text


def paper_epoch_seconds() -> dict[tuple[str, str], float]:
    """Table 8 (seconds per epoch on the authors' hardware), keyed by (model, dataset)."""
    path = Path(__file__).resolve().parent.parent / "paperdata" / "tables.csv"
    with path.open(newline="") as handle:
        return {
            (row["model"], row["dataset"]): float(row["value"])
            for row in csv.DictReader(handle)
            if row["table"] == "8" and row["metric"] == "epoch_seconds"
        }


def environment(device: str) -> dict[str, Any]:
    import torch
    import torchvision

    from harness.training.provenance import device_info, git_state

    info = device_info(device)
    return {
        "device": {**info, "type": device.split(":")[0]},
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "git": git_state(),
    }


def command_line(args: argparse.Namespace) -> list[str]:
    """The full command this run is equivalent to, defaults spelled out (rerunnable as is)."""
    words = ["harness", "bench"]
    for name, value in vars(args).items():
        if name in ("command", "func") or value is None or value is False:
            continue
        words.append("--" + name.replace("_", "-"))
        if isinstance(value, list):
            words.append(",".join(map(str, value)))
        elif value is not True:
            words.append(str(value))
    return words


def run(args: argparse.Namespace) -> int:
    from harness.bench.fused import add_fused_projection, fused_cohort_size, measure_fused
    from harness.bench.mps import mps_daemon
    from harness.bench.packing import measure_packing
    from harness.bench.pipeline import BenchSettings, project_grid, time_authors, time_ours
    from harness.datasets.gpu.shapes import SHAPES
    from harness.experiment.grids import paper_grid
    from harness.models import MODEL_NAMES

    device = _resolve_device(args.device)
    on_cuda = device.startswith("cuda")
    if args.dataset_shape not in SHAPES:
        raise HarnessError(
            f"unknown --dataset-shape {args.dataset_shape!r}; valid: {', '.join(SHAPES)}"
        )
    if args.model not in MODEL_NAMES:
        raise HarnessError(f"unknown --model {args.model!r}; valid: {', '.join(MODEL_NAMES)}")
    for name in ("steps", "epochs", "seeds", "data_size"):
        _positive(name.replace("_", "-"), getattr(args, name))
    _positive("warmup", args.warmup, 0)
    _positive("loader-workers", args.loader_workers, 0)
    if args.batch_size is not None:
        _positive("batch-size", args.batch_size)
    slots = _int_list("slots", _joined(args.slots) or ("1,4,8,12" if on_cuda else "1,2"))
    fused_sizes = _int_list("fused", _joined(args.fused) or ("1,4,8,12" if on_cuda else "1,2"))
    if args.grid_fused and not fused_sizes:
        raise HarnessError("--grid-fused needs fused cohort sizes; drop --fused 0 or --grid-fused")
    if args.grid_fused and args.grid == "none":
        raise HarnessError("--grid-fused needs a grid to project; drop --grid none or --grid-fused")
    settings = BenchSettings(
        device=device,
        model=args.model,
        shape=args.dataset_shape,
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
        precision=args.precision or ("bf16" if on_cuda else "fp32"),
        channels_last=not args.no_channels_last,
        cuda_graph=on_cuda and not args.no_graph,
        data_size=args.data_size,
        workers=args.loader_workers,
        threads=args.threads,
    )
    if args.threads is not None:
        import torch

        torch.set_num_threads(_positive("threads", args.threads))
    cells: list[tuple[str, str]] = []
    if args.grid == "paper":
        models = _names("grid-models", _joined(args.grid_models), tuple(MODEL_NAMES))
        datasets = _names("grid-datasets", _joined(args.grid_datasets), tuple(SHAPES))
        cells = [(m, d) for m, d in paper_grid().cells if m in models and d in datasets]

    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = now - clock
        clock = now

    print(f"harness bench: {args.model} on {args.dataset_shape}-shaped data, {device}", flush=True)
    authors = time_authors(settings)
    phase("authors")
    _line("authors' pipeline", authors)
    ours = time_ours(settings)
    phase("ours")
    _line("fast path", ours)
    speedup = ours["steps_per_s"] / authors["steps_per_s"]
    print(f"  fast path / authors' pipeline: {speedup:.2f}x", flush=True)
    with mps_daemon(device, args.mps and bool(slots)) as (mps_env, mps):
        packing = measure_packing(settings, slots, env=mps_env) if slots else []
    if args.mps and not slots:
        mps["reason"] = "packing skipped (--slots 0)"
    phase("packing")
    for entry in packing:
        print(
            f"  {entry['jobs']:>2} concurrent jobs: {entry['total_steps_per_s']:.1f} steps/s in total",
            flush=True,
        )
    if args.mps:
        print(f"  MPS: {'used' if mps['used'] else 'not used (' + mps['reason'] + ')'}", flush=True)
    single = next((e["total_steps_per_s"] for e in packing if e["jobs"] == 1), None)
    best = max((e["total_steps_per_s"] for e in packing), default=None)
    packing_speedup = best / single if single and best else None
    fused = None
    if fused_sizes:
        fused = measure_fused(settings, fused_sizes, ours["steps_per_s"], best)
        phase("fused")
        for entry in fused["runs"]:
            _fused_line(entry)
    projection = None
    if cells:
        projection = project_grid(
            settings, cells, args.epochs, args.seeds, packing_speedup, paper_epoch_seconds()
        )
        # Which figure the projection's parallel time comes from (fused overrides packing).
        projection["method"] = "packing" if projection["packed_hours"] else "serial"
        projection["fused_members"] = projection["fused_hours"] = None
        if args.grid_fused:
            members = fused_cohort_size(fused_sizes, args.seeds)
            add_fused_projection(settings, projection, members)
        phase("projection")
        packed, fused_h = projection["packed_hours"], projection["fused_hours"]
        print(
            f"  grid '{args.grid}' ({len(projection['cells'])} cells x {args.seeds} seeds x "
            f"{args.epochs} epochs): {projection['serial_hours']:.2f} h one job at a time"
            + (f", {packed:.2f} h packed" if packed else "")
            + (f", {fused_h:.2f} h fused ({projection['fused_members']} seeds)" if fused_h else ""),
            flush=True,
        )

    report = {
        "schema": SCHEMA,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": command_line(args),
        "argv": sys.argv,
        **environment(device),
        "settings": {
            **settings.__dict__,
            "batch_size": settings.batch(),
            "grid": args.grid,
            "slots": slots,
            "fused": fused_sizes,
            "grid_fused": args.grid_fused,
        },
        "pipelines": {"authors": authors, "ours": ours},
        "speedup": speedup,
        "packing": {
            "model": args.model,
            "dataset_shape": args.dataset_shape,
            "runs": packing,
            "speedup": packing_speedup,
            "mps": mps,
        },
        "fused": fused,
        "projection": projection,
        "phase_seconds": phases,
    }
    path = write_report(report, Path(args.out), device)
    print(f"wrote {path}")
    return 0


def _line(label: str, timing: dict[str, Any]) -> None:
    print(
        f"  {label:<18} {timing['steps_per_s']:8.2f} steps/s  {timing['ms_per_step']:8.2f} ms/step  "
        f"{timing['images_per_s']:9.0f} images/s",
        flush=True,
    )


def _fused_line(run: dict[str, Any]) -> None:
    packing = run["vs_best_packing"]
    print(
        f"  fused {run['members']:>2} seeds: {run['fused_steps_per_s']:8.2f} fused steps/s = "
        f"{run['member_steps_per_s']:8.2f} member-steps/s, {run['vs_one_job']:.2f}x one job"
        + (f", {packing:.2f}x best packing" if packing else ""),
        flush=True,
    )


def write_report(report: dict[str, Any], folder: Path, device: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(
            f"cannot create --out folder {folder}: {exc.strerror}; pick a writable one"
        ) from None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"bench-{stamp}-{device.replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path
