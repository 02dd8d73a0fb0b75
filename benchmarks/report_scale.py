"""Time `harness report --html` on synthetic results databases of growing size.

Each size is 4 models (ResNet-18 and the three GradAttn variants) x the paper's 8 datasets x
S seeds, written by tests/helpers/synthetic_db.py exactly as workers leave rows. Each report
runs as its own `harness report` process, so the wall time and the peak memory (max RSS, from
wait4) are that command's alone. The figures in docs/PERFORMANCE.md ("Report at scale") come
from

    python benchmarks/report_scale.py --runs 250,1000,4000 [--baseline CHECKOUT]

The ratio column is each size's time over the smallest size's, from this one invocation on
this one machine: growth, with the device and command printed beside it. Peak RSS is wait4's
ru_maxrss: the largest of the report process and the figure workers it forked and waited for.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

MODELS = ("resnet18", "gradattn_nope", "gradattn_learnable", "gradattn_rope")


def build_db(path: Path, runs: int) -> int:
    import numpy as np
    from synthetic_db import SyntheticRun, fill_synthetic

    from harness.datasets import PAPER_DATASETS
    from harness.store.engine import make_engine

    cells = [(d, m) for d in PAPER_DATASETS for m in MODELS]
    seeds = math.ceil(runs / len(cells))
    rng = np.random.default_rng(7)
    rows = []
    for dataset, model in cells:
        level = 0.8 + 0.02 * MODELS.index(model)
        for seed in range(seeds):
            top1 = float(np.clip(level + 0.01 * rng.standard_normal(), 0, 1))
            rows.append(SyntheticRun(model=model, dataset=dataset, seed=seed,
                                     metrics={"top1": top1}))  # fmt: skip
    fill_synthetic(make_engine(f"sqlite:///{path}"), rows)
    return len(rows)


def time_report(db: Path, out: Path, code: Path = ROOT) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `harness report --html` process running the
    harness found under `code` (this checkout, or the baseline's)."""
    argv = [sys.executable, "-m", "harness.cli", "report", "--db", f"sqlite:///{db}", "--html",
            "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    # cwd too: `python -m` puts the working directory ahead of PYTHONPATH on sys.path.
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=code)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"report failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="250,1000,4000", help="sizes, comma-separated")
    parser.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                        help="another checkout (e.g. `git worktree add /tmp/base REV`) timed on "
                             "the same databases, alternating with this one")  # fmt: skip
    args = parser.parse_args()
    sizes = [int(x) for x in args.runs.split(",")]
    print(f"device: CPU {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}")
    print("command: harness report --db sqlite:///DB --html --out DIR (one process per size)")
    header = "runs    seeds  wall s   ratio   s per 1,000 more runs   peak RSS MiB"
    if args.baseline:
        print(f"baseline: {args.baseline.resolve()}")
        header += "   baseline s   baseline MiB   this / baseline"
    print(header)
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for runs in sizes:
            db = Path(tmp) / f"r{runs}.db"
            written = build_db(db, runs)
            if args.baseline:
                base_wall, base_rss = time_report(db, Path(tmp) / f"base{runs}", args.baseline)
            wall, rss = time_report(db, Path(tmp) / f"out{runs}")
            first = first or (written, wall)
            # Growth beyond the smallest size: the fixed part (imports, the figures, one per
            # dataset and kind) cancels out, what is left is the cost of the runs themselves.
            more = written - first[0]
            marginal = f"{(wall - first[1]) / more * 1000:8.2f}" if more else "       –"
            line = (f"{written:5d}  {math.ceil(runs / 32):5d}  {wall:7.1f}  {wall / first[1]:6.2f}  "
                    f"{marginal:>22}  {rss:12.0f}")  # fmt: skip
            if args.baseline:
                line += f"  {base_wall:11.1f}  {base_rss:13.0f}  {wall / base_wall:16.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
