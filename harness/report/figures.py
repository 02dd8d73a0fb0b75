"""The report's figures (matplotlib, Agg backend), written as PNG files next to index.html.

Every function returns `Figure` records: a written file, or a skipped figure with the reason,
so the page can say why a figure is absent instead of showing a broken image.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from harness.experiment.paper import find_paper_value  # noqa: E402
from harness.models import MODEL_LABELS
from harness.report.tables import DATASET_LABELS, TABLE9_MODELS, label  # noqa: E402

DPI = 80
# A fixed title height (where matplotlib would put it: no axis draws ticks on top). Left to
# itself, matplotlib measures every tick label of every axes to place each title, which was a
# third of the figures' drawing time.
TITLE_Y = 1.0
GRADATTN_MODELS = ("gradattn_nope", "gradattn_learnable", "gradattn_rope")
MODEL_ORDER = TABLE9_MODELS
PALETTE = dict(zip(MODEL_ORDER, plt.get_cmap("tab10").colors, strict=False))


@dataclass
class Figure:
    """One figure of the page: `file` relative to index.html, or None with `skipped` reason."""

    kind: str
    title: str
    file: str | None = None
    caption: str = ""
    skipped: str = ""


def safe_name(*parts: str) -> str:
    """A file name from database strings: only [A-Za-z0-9_.-], plus a short hash so two
    names that sanitize alike ('a/b', 'a_b') still get different files."""
    raw = "-".join(parts)
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw)[:60]
    return f"{clean}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}.png"


def _models_in(frame: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(frame["model"]))
    return [m for m in MODEL_ORDER if m in present] + sorted(set(present) - set(MODEL_ORDER))


def _color(model: str):
    return PALETTE.get(model, "0.3")


def _save(
    fig: plt.Figure, out_dir: Path, name: str, bottom: float = 0.16, right: float = 0.98
) -> str:
    # Fixed margins instead of tight_layout: tight_layout draws the figure an extra time,
    # which doubled the report's figure time on a loaded CPU.
    fig.subplots_adjust(left=0.08, right=right, top=0.9, bottom=bottom, wspace=0.3, hspace=0.6)
    fig.savefig(out_dir / name, dpi=DPI)
    plt.close(fig)
    return name


def _t_half_width(values: np.ndarray, level: float = 0.95) -> float:
    from scipy import stats as sps

    if len(values) < 2:
        return float("nan")
    sem = values.std(ddof=1) / np.sqrt(len(values))
    return float(sps.t.ppf(0.5 + level / 2, len(values) - 1) * sem)


def seed_points(results: pd.DataFrame, protocol: str, out_dir: Path) -> list[Figure]:
    """Table 3's metric per seed, per (dataset, model), with mean and 95% t-interval."""
    title = "Top-1 per seed with mean and 95% interval"
    data = results.dropna(subset=["top1"])
    if data.empty:
        return [Figure("seeds", title, skipped="no finished job has a top-1 value")]
    datasets = list(dict.fromkeys(data["dataset"]))
    ncols = min(4, len(datasets))
    nrows = -(-len(datasets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        sub = data[data["dataset"] == dataset]
        models = _models_in(sub)
        for x, model in enumerate(models):
            values = sub.loc[sub["model"] == model, "top1"].to_numpy(float) * 100
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
            ax.scatter(x + np.asarray(jitter), values, s=14, color=_color(model), alpha=0.7)
            half = _t_half_width(values)
            ax.errorbar(x + 0.3, values.mean(), yerr=None if np.isnan(half) else half,
                        fmt="D", color="black", markersize=4, capsize=3)  # fmt: skip
            published = find_paper_value(dataset, model, "top1")
            if published is not None:
                ax.scatter([x + 0.3], [published[1] * 100], marker="x", color="red", s=30)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([label(m, MODEL_LABELS) for m in models], rotation=30, fontsize=7)
        ax.set_title(label(dataset, DATASET_LABELS), fontsize=9, y=TITLE_Y)
        ax.set_ylabel("Top-1 (%)", fontsize=8)
    for ax in list(axes.flat)[len(datasets) :]:
        ax.set_visible(False)
    name = _save(fig, out_dir, safe_name("seeds", protocol), bottom=0.2 / nrows)
    caption = (
        "Dots: one seed each; diamond and bar: mean and 95% t-interval over seeds; red x: the "
        "paper's value (Table 3, or Table 9 for SE/CBAM)."
    )
    return [Figure("seeds", title, name, caption)]


def training_curves(epochs: pd.DataFrame, protocol: str, out_dir: Path) -> list[Figure]:
    """Figures 3-4: train and validation accuracy per epoch, mean over seeds with a ±SD band."""
    if epochs.empty:
        return [Figure("curves", "Training curves", skipped="no per-epoch rows in the database")]
    figures = []
    for dataset in dict.fromkeys(epochs["dataset"]):
        sub = epochs[epochs["dataset"] == dataset]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
        for model in _models_in(sub):
            runs = sub[sub["model"] == model]
            per_epoch = runs.groupby("epoch")
            legend = f"{label(model, MODEL_LABELS)} (n={runs['job_id'].nunique()})"
            for ax, column in zip(axes, ("train_acc", "val_acc"), strict=True):
                mean = per_epoch[column].mean() * 100
                sd = per_epoch[column].std(ddof=1).fillna(0.0) * 100
                ax.plot(mean.index, mean.values, color=_color(model), label=legend)
                ax.fill_between(mean.index, mean - sd, mean + sd, color=_color(model), alpha=0.2)
        for ax, what in zip(axes, ("Training", "Validation"), strict=True):
            ax.set_title(f"{what} accuracy", fontsize=9, y=TITLE_Y)
            ax.set_xlabel("Epoch", fontsize=8)
        axes[0].set_ylabel("Accuracy (%)", fontsize=8)
        axes[1].legend(fontsize=7, loc="lower right")
        title = f"Training curves: {label(dataset, DATASET_LABELS)}"
        name = _save(fig, out_dir, safe_name("curves", protocol, dataset))
        figures.append(Figure("curves", title, name, "Mean over seeds; band: ±1 SD."))
    return figures


def gradient_profiles(gradients: pd.DataFrame, protocol: str, out_dir: Path) -> list[Figure]:
    """Figure 5: mean gradient norm per layer (depth order), both measurement modes."""
    if gradients.empty:
        return [Figure("gradients", "Gradient norm per layer",
                       skipped="no gradient rows in the database")]  # fmt: skip
    figures = []
    for dataset in dict.fromkeys(gradients["dataset"]):
        sub = gradients[gradients["dataset"] == dataset]
        modes = [m for m in ("output", "param") if (sub["mode"] == m).any()]
        fig, axes = plt.subplots(1, len(modes), figsize=(4.6 * len(modes), 3.2), squeeze=False)
        for ax, mode in zip(axes.flat, modes, strict=True):
            for model in _models_in(sub):
                rows = sub[(sub["mode"] == mode) & (sub["model"] == model)]
                per_layer = rows.groupby("layer_index")["mean"].mean().dropna()
                per_layer = per_layer[per_layer > 0]  # log axis; silent layers have no mean
                if not per_layer.empty:
                    ax.plot(per_layer.index, per_layer.values, marker=".", markersize=3,
                            color=_color(model), label=label(model, MODEL_LABELS))  # fmt: skip
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost much, say little
            ax.axhline(1e-6, color="red", linestyle=":", linewidth=1)
            ax.axhline(10, color="red", linestyle=":", linewidth=1)
            ax.set_title(f"{mode} mode", fontsize=9, y=TITLE_Y)
            ax.set_xlabel("Layer (depth order)", fontsize=8)
            ax.set_ylabel("Mean gradient norm", fontsize=8)
        handles, names = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, names, fontsize=7, loc="center right")  # outside the data
        title = f"Gradient norm per layer: {label(dataset, DATASET_LABELS)}"
        name = _save(fig, out_dir, safe_name("gradients", protocol, dataset), right=0.8)
        caption = ("Mean over seeds of each layer's mean norm; output mode = gradient w.r.t. "
                   "module outputs (the paper's hooks), param mode = per-parameter gradients. "
                   "Dotted: the healthy range (1e-6, 10).")  # fmt: skip
        figures.append(Figure("gradients", title, name, caption))
    return figures


def attention_profiles(results: pd.DataFrame, protocol: str, out_dir: Path) -> list[Figure]:
    """Attention weight per token depth (5 extraction points) for the GradAttn models."""
    title = "Attention weight per token depth"
    rows = []
    for rec in results[results["model"].isin(GRADATTN_MODELS)].itertuples(index=False):
        layers = (rec.extra or {}).get("attention_by_token")
        if not isinstance(layers, list):
            continue
        for layer_index, weights in enumerate(layers):
            if isinstance(weights, list) and weights:
                for token, weight in enumerate(weights):
                    rows.append((rec.dataset, rec.model, layer_index, token, float(weight)))
    if not rows:
        return [Figure("attention", title, skipped="no GradAttn result has attention_by_token")]
    frame = pd.DataFrame(rows, columns=["dataset", "model", "layer", "token", "weight"])
    figures = []
    for dataset in dict.fromkeys(frame["dataset"]):
        sub = frame[frame["dataset"] == dataset]
        models = _models_in(sub)
        fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3), squeeze=False)
        for ax, model in zip(axes.flat, models, strict=True):
            per = sub[sub["model"] == model].groupby(["layer", "token"])["weight"].mean()
            for layer_index in per.index.get_level_values(0).unique():
                series = per.loc[layer_index]
                ax.plot(series.index + 1, series.values, marker="o", markersize=3,
                        label=f"encoder layer {layer_index + 1}")  # fmt: skip
            ax.set_title(label(model, MODEL_LABELS), fontsize=9, y=TITLE_Y)
            ax.set_xlabel("Token (stem → stage 4)", fontsize=8)
            ax.set_ylabel("Mean attention weight", fontsize=8)
            ax.legend(fontsize=7, loc="upper right")
        name = _save(fig, out_dir, safe_name("attention", protocol, dataset))
        figures.append(Figure("attention", f"{title}: {label(dataset, DATASET_LABELS)}", name,
                              "Mean over seeds, per encoder layer."))  # fmt: skip
    return figures


def start_figures(
    results: pd.DataFrame,
    epochs: pd.DataFrame,
    gradients: pd.DataFrame,
    protocol: str,
    out_dir: Path,
) -> FigureDrawing:
    """Start drawing every figure of one protocol under out_dir; `.result()` gives them.

    Drawing PNGs is most of a large report's time and does not grow with the runs, so the four
    kinds are drawn by worker processes (forked: the frames are inherited, not copied through
    pipes) while the caller computes the section's tables and claims, where the platform forks
    and more than one core is free. The figures and their order are the same either way;
    HARNESS_REPORT_PROCESSES=1 draws them in-process, at `.result()`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(seed_points, results), (training_curves, epochs), (gradient_profiles, gradients),
            (attention_profiles, results)]  # fmt: skip
    return FigureDrawing(jobs, protocol, out_dir, _figure_processes())


class FigureDrawing:
    """Figures being drawn; `result()` waits for them, `cancel()` drops what has not started
    and waits for the rest (so nothing writes into a report directory after it is removed)."""

    def __init__(self, jobs: list, protocol: str, out_dir: Path, processes: int) -> None:
        self._jobs, self._protocol, self._out_dir = jobs, protocol, out_dir
        self._pool = self._futures = None
        if processes > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=context)
            self._futures = [self._pool.submit(draw, frame, protocol, out_dir)
                             for draw, frame in jobs]  # fmt: skip

    def result(self) -> list[Figure]:
        if self._pool is None:
            return [fig for draw, frame in self._jobs
                    for fig in draw(frame, self._protocol, self._out_dir)]  # fmt: skip
        try:
            return [fig for future in self._futures for fig in future.result()]
        finally:
            self._pool.shutdown()

    def cancel(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _figure_processes() -> int:
    import multiprocessing
    import os

    wanted = os.environ.get("HARNESS_REPORT_PROCESSES")
    if wanted is not None:
        return max(1, int(wanted)) if wanted.isdigit() else 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cores or 1)
