"""Operating characteristics of the sequential design (harness.report.sequential), by simulation.

For each spending function, horizon and true effect: the power (P(decided by the horizon)), the
expected seeds used E[N], and the fixed design of the same power (the fixed rule's smallest n
deciding with at least that probability); under the null, the family-wise false-positive rate
with a look after every seed. The figures in docs/STATISTICS.md ("Sequential audits") come from

    python benchmarks/sequential_design.py --audits 4000

Differences are normal with SD 3 SESOI (accuracy differences of 1.5 pp, SESOI 0.5 pp); the claim
is "better by at least one SESOI". CPU only; about a minute.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from harness.report.power import decision_power
from harness.report.sequential import SPENDING, boundaries, intervals
from harness.report.signed_rank import critical_count
from harness.report.verdicts import ALPHA, DECIDED, classify, directional_region

REGION = directional_region(1.0, 1.0)
SD = 3.0


def scan(z: np.ndarray, cuts: tuple[int | None, ...]) -> tuple[np.ndarray, np.ndarray]:
    rows, horizon = z.shape
    look = np.full(rows, horizon + 1)
    code = np.full(rows, "", dtype=object)
    for n in range(1, horizon + 1):
        if cuts[n - 1] is None:
            continue
        open_rows = np.flatnonzero(look > horizon)
        low, high = intervals(z[open_rows, :n], cuts[n - 1])
        codes = classify(low, high, REGION)
        hit = np.isin(codes, DECIDED)
        look[open_rows[hit]], code[open_rows[hit]] = n, codes[hit]
    return look, code


def fixed_n(effect_sd: float, power: float, m: int) -> int | None:
    for n in range(1, 101):
        if critical_count(n, m, ALPHA) is None:
            continue
        if decision_power(np.empty(0), n, effect_sd * SD, SD, REGION, m, ALPHA, draws=4000) >= power:
            return n
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=4000)
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"device: CPU ({platform.processor() or platform.machine()}), "
          f"{args.audits} simulated audits per row, alpha {ALPHA}")  # fmt: skip
    print("spending        m  horizon  effect/SD  power   E[N]   fixed n, same power")
    rng = np.random.default_rng(31)
    for spending in SPENDING:
        for m, horizon, effect in ((1, 20, 1.0), (1, 20, 2 / 3), (1, 30, 2 / 3), (8, 30, 1.0)):
            z = np.round(effect * SD + SD * rng.standard_normal((args.audits, horizon)), 9) + 0.0
            look, _ = scan(z, boundaries(horizon, m, ALPHA, spending))
            power = float((look <= horizon).mean())
            seeds = float(np.minimum(look, horizon).mean())
            print(f"{spending:15s} {m:2d}  {horizon:7d}  {effect:9.2f}  {power:5.3f}  {seeds:5.1f}"
                  f"  {fixed_n(effect, power, m)}")  # fmt: skip
    print("\nnull (true effect 0), family of 4 parts, horizon 20: family-wise false positives")
    for spending in SPENDING:
        z = SD * rng.standard_normal((args.audits * 4, 20))
        _, code = scan(z, boundaries(20, 4, ALPHA, spending))
        rate = np.isin(code, ["effect", "opposite"]).reshape(args.audits, 4).any(axis=1).mean()
        se = math.sqrt(rate * (1 - rate) / args.audits)
        print(f"{spending:15s} {rate:.4f} (MC SE {se:.4f})")
    fixed = tuple(critical_count(n, 4, ALPHA) for n in range(1, 21))
    z = SD * rng.standard_normal((args.audits * 4, 20))
    _, code = scan(z, fixed)
    rate = np.isin(code, ["effect", "opposite"]).reshape(args.audits, 4).any(axis=1).mean()
    print(f"{'fixed, peeking':15s} {rate:.4f} (the fixed interval at every look: not valid)")
    print(f"took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
