"""Every paired comparison of one section's runs, computed once and shared.

A report section asks for the same comparison many times: Table 3's marks, the claims' parts
and families, and the figures drawn from those. `Comparisons` indexes the runs of each metric
once (stats.cell_runs) and keeps each (metric, dataset, candidate, baseline, scale, sign)
result (stats.paired_cell: two-sided, 95% t-interval), so each is computed once per report
section whoever asks first. Orientation only flips the sign for lower-is-better metrics, so
oriented and raw requests of a higher-is-better metric are one entry.
"""

from __future__ import annotations

import pandas as pd

from harness.report.stats import CellRuns, PairedResult, cell_runs, direction, paired_cell


class Comparisons:
    def __init__(self, results: pd.DataFrame) -> None:
        self.results = results
        self._runs: dict[str, CellRuns] = {}
        self._pairs: dict[tuple[str, str, str, str, str, bool], PairedResult] = {}
        self.computed = 0  # distinct comparisons computed (each exactly once)
        self.requests = 0  # times one was asked for

    def runs(self, metric: str) -> CellRuns:
        if metric not in self._runs:
            self._runs[metric] = cell_runs(self.results, metric)
        return self._runs[metric]

    def paired(
        self,
        metric: str,
        dataset: str,
        candidate: str,
        baseline: str,
        *,
        scale: str = "diff",
        oriented: bool = False,
    ) -> PairedResult:
        """stats.paired_cell(..., alternative="two-sided", level=0.95) for this section."""
        flipped = oriented and direction(metric) == "lower"
        key = (metric, dataset, candidate, baseline, scale, flipped)
        self.requests += 1
        if key not in self._pairs:
            self._pairs[key] = paired_cell(self.runs(metric), metric, dataset, candidate,
                                           baseline, alternative="two-sided", oriented=flipped,
                                           scale=scale)  # fmt: skip
            self.computed += 1
        return self._pairs[key]
