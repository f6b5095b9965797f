"""A report's figures (seaborn), each written as PDF (for the paper) and PNG (for a look):

    metrics    each report metric against the study's numeric setting (alpha, mask ratio, budget) or its
               configurations, per masking (the study's choice, ``Run.masking``; no legend where the x axis
               already names them): per-seed points, mean, 95% Student-t confidence interval clipped to the
               metric's range (``model/tasks.py``), the number of seeds n in the title
    curves     training curves (``report.curves``) per masking: mean over seeds, ± sd band
    masks      the realized-mask frequency maps (``model/mask_stats.py``) of one run per configuration (the table's
               rows: two Dirichlet alphas are two rows), one row each, titled with its settings
    deltas     configurations x metrics: the difference from the baseline, coloured by the relative
               improvement in the metric's direction, * where significant after correction
    race       a race only (``race:``): the race's metric at each look (x: the seeds it had) per configuration,
               mean and 95% t-interval over the look's seeds; x where one was eliminated (its line stops),
               the winner's line thicker

Axes name metrics as the task table does (``model/tasks.py``'s ``paper_label``). The same data give the same
files: the strip plot's jitter is seeded and no date or software version is written into them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from tqdm import tqdm

from ablate.stats import t_interval
from ablate.table import MARKDOWN, metric_label, short
from model.tasks import direction, metric_of

MAX_ANNOTATED_ROWS = 40
PNG_DPI = 100
# What would differ between two drawings of the same data: the date (PDF) and the software's version (both).
UNDATED = {"pdf": {"CreationDate": None, "Producer": None, "Creator": None}, "png": {"Software": None}}


def draw(name: str, figure: plt.Figure, out: Path) -> list[Path]:
    """``name``.pdf (vector, for the paper) and ``name``.png (for a look)."""
    paths = [out / f"{name}.pdf", out / f"{name}.png"]
    for path in paths:
        figure.savefig(path, dpi=PNG_DPI, metadata=UNDATED[path.suffix[1:]])
    plt.close(figure)
    return paths


@contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """seaborn's strip-plot jitter draws from NumPy's global generator: seeded while a figure is drawn, so the same
    data give the same picture, and restored after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def clipped_interval(metric: str) -> Callable[[np.ndarray], tuple[float, ...]]:
    """``t_interval``, clipped to the values ``metric`` can take (an accuracy's interval ends at 1)."""
    spec = metric_of(metric)
    low, high = (spec.low, spec.high) if spec else (-np.inf, np.inf)
    return lambda values: tuple(float(np.clip(end, low, high)) for end in t_interval(values))


def seeds_text(per_seed: pd.DataFrame, group: str) -> str:
    """``n=2 seeds`` (every configuration and metric had 2), or ``n=1-3 seeds``."""
    counts = per_seed.groupby([group, "metric"], observed=True)["value"].size()
    low, high = int(counts.min()), int(counts.max())
    return f"n={low} seed{'s' * (high > 1)}" if low == high else f"n={low}-{high} seeds"


def x_axis(per_seed: pd.DataFrame, keys: list[str]) -> tuple[str, bool]:
    """The first numeric setting with several values; else the only setting, or the configuration label.
    -> (column, whether numeric)."""
    for key in keys:
        values = per_seed[key].astype(object)
        if values.nunique() > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return key, True
    return (keys[0] if len(keys) == 1 else "label"), False


def metrics_figure(per_seed: pd.DataFrame, metrics: list[str], keys: list[str]) -> plt.Figure:
    """per_seed: one row per (finished run, metric): value, masking, label and the settings."""
    x, numeric = x_axis(per_seed, keys)
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(metrics):]:
        ax.set_axis_off()
    order = None if numeric else [str(v) for v in per_seed[x].cat.categories if v in set(per_seed[x])]
    data = per_seed.assign(**{x: per_seed[x].astype(float if numeric else str)})
    # Colour by masking along a numeric setting, or where it groups several configurations; where each x value is
    # one masking the axis already names them: no legend.
    legend = numeric or bool((data.groupby("masking", observed=True)[x].nunique() > 1).any())
    hue = "masking" if legend else x
    for ax, metric in zip(axes.flat, metrics):
        part = data[data["metric"] == metric]
        interval = clipped_interval(metric)
        if numeric:
            sns.lineplot(part, x=x, y="value", hue=hue, errorbar=interval, marker="o", legend=legend, ax=ax)
            sns.scatterplot(part, x=x, y="value", hue=hue, alpha=0.45, s=18, legend=False, ax=ax)
        else:
            with seeded():
                sns.stripplot(part, x=x, y="value", hue=hue, order=order, alpha=0.6, size=5, legend=False, ax=ax)
            sns.pointplot(part, x=x, y="value", hue=hue, order=order, errorbar=interval, linestyle="none",
                          marker="D", capsize=0.15, legend=legend, ax=ax)
            if sum(map(len, order)) > 30:  # about what fits side by side under a 4.2-inch axis
                plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
        ax.set_xlabel(short(x) if x in keys else "configuration")
        ax.set_ylabel(metric_label(metric, MARKDOWN))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[: len(metrics)]:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if legend and handles:
        figure.legend(handles, labels, title="masking", loc="outside right upper")  # once, clear of the data
    figure.suptitle(f"Per-seed values (points), mean and 95% t-interval over seeds ({seeds_text(per_seed, 'label')}"
                    " per configuration), clipped to the metric's range")
    return figure


def curves_figure(curves: pd.DataFrame, keys: list[str]) -> plt.Figure:
    """curves: one row per (finished run, curve metric, step): value, masking, label and the settings.
    One line per masking, ± sd over seeds; or, where a masking has several configurations, a panel per masking
    and a line per configuration (coloured along the numeric setting if there is one), the mean over seeds."""
    if curves.groupby("masking", observed=True)["label"].nunique().max() == 1:
        hue, col, errorbar, what = "masking", None, "sd", "mean ± sd over seeds"
    else:  # too many lines for bands: average the seeds here, in one pass, instead of per line and step
        key, numeric = x_axis(curves, keys)
        hue, col, errorbar, what = (key if numeric else "label"), "masking", None, "mean over seeds"
        curves = curves.groupby(["metric", "masking", hue, "step"], observed=True, as_index=False)["value"].mean()
        curves[hue] = curves[hue].astype(float if numeric else str)
    grid = sns.relplot(curves, x="step", y="value", hue=hue, kind="line", errorbar=errorbar, row="metric", col=col,
                       facet_kws={"sharey": "row", "sharex": True}, height=3.2, aspect=1.5)
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    grid.set_axis_labels("step", f"value ({what})")
    if grid.legend is not None and hue in keys:
        grid.legend.set_title(short(hue))
    return grid.figure


def mask_frequency_figure(images: dict[str, Path]) -> plt.Figure:
    """One realized-mask frequency map per configuration (label -> PNG), stacked."""
    pictures = {label: plt.imread(path)[..., :3] for label, path in images.items()}  # opaque: no alpha
    height, width = next(iter(pictures.values())).shape[:2]
    figure, axes = plt.subplots(len(pictures), 1, figsize=(max(width / 100, 6), len(pictures) * (height / 100 + 0.4)),
                                squeeze=False, layout="constrained")
    for ax, (label, picture) in zip(axes[:, 0], pictures.items()):
        ax.imshow(picture)
        ax.set_axis_off()
        ax.set_title(label, fontsize=13, fontweight="bold", loc="left")
    return figure


def deltas_figure(long: pd.DataFrame, metrics: list[str], precision: int, baseline: str) -> plt.Figure:
    """long: ``stats.compare``'s rows with label and baseline; the baselines' own rows are left out."""
    rows = long[~long["baseline"]]
    labels = list(dict.fromkeys(rows["label"].astype(str)))
    sign = np.array([1.0 if direction(m) == "higher" else -1.0 for m in rows["metric"]])
    base = (rows["mean"] - rows["delta"]).abs().to_numpy()  # the baseline's mean
    improvement = 100 * sign * rows["delta"].to_numpy() / base
    text = [f"{d:+.{precision}f}{'*' * bool(s)}" if np.isfinite(d) else "–"
            for d, s in zip(rows["delta"], rows["significant"])]
    frame = rows.assign(improvement=improvement, text=text, label=rows["label"].astype(str))
    color = frame.pivot(index="label", columns="metric", values="improvement").reindex(index=labels, columns=metrics)
    notes = frame.pivot(index="label", columns="metric", values="text").reindex(index=labels, columns=metrics)
    limit = float(np.nanmax(np.abs(color.to_numpy()))) if np.isfinite(color.to_numpy()).any() else 1.0
    annotate = len(labels) <= MAX_ANNOTATED_ROWS  # beyond, colour only (the numbers are in summary.csv)
    figure, ax = plt.subplots(figsize=(1.6 * len(metrics) + 3, (0.5 if annotate else 0.1) * len(labels) + 2.6),
                              layout="constrained")
    sns.heatmap(color, annot=notes.fillna("–").to_numpy() if annotate else False, fmt="", cmap="RdBu", center=0,
                vmin=-limit or -1, vmax=limit or 1, linewidths=0.5 if annotate else 0,
                yticklabels=1 if annotate else -(-len(labels) // MAX_ANNOTATED_ROWS),  # every k-th label
                cbar_kws={"label": "improvement (%)"}, ax=ax)
    ax.set_xticklabels([metric_label(m, MARKDOWN) for m in metrics], rotation=25, ha="right")
    ax.tick_params(axis="y", labelrotation=0)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(f"Difference from the baseline ({baseline}); * significant after correction;\n"
                 "colour: relative change in the metric's better direction", fontsize=10)
    return figure


@dataclass(frozen=True)
class RaceFigure:
    """What the race figure shows: ``points`` one row per look, configuration racing at it and seed it used:
    name (the configuration and its outcome), look, seeds (at that look), value, winner, eliminated (at that
    look); the race's metric; a title (the rule)."""

    points: pd.DataFrame
    metric: str
    title: str


def race_figure(race: RaceFigure) -> plt.Figure:
    """One line per configuration through the looks it raced at (module docstring)."""
    names = list(dict.fromkeys(race.points["name"]))
    winners = set(race.points.loc[race.points["winner"], "name"])
    # side by side at a look, within 0.3 seeds (looks are a seed apart at least)
    offset = dict(zip(names, 0.3 / len(names) * (np.arange(len(names)) - (len(names) - 1) / 2)))
    points = race.points.assign(x=race.points["seeds"] + race.points["name"].map(offset))
    colors = dict(zip(names, sns.color_palette(n_colors=len(names))))
    widths = {n: 3.2 if n in winners else 1.4 for n in names}
    kept = [n for n in names if not points.loc[points["name"] == n, "eliminated"].any()]
    # The survivors again on their own scale: a clearly worse configuration squeezes the close ones flat.
    panels = [names, kept] if kept and len(kept) < len(names) else [names]
    figure, axes = plt.subplots(1, len(panels), figsize=(7.5 * (1 + 0.6 * (len(panels) - 1)), 4.6),
                                layout="constrained", squeeze=False, sharex=True)
    looks = points.drop_duplicates("look").sort_values("look")
    for ax, shown in zip(axes[0], panels):
        _race_lines(ax, points[points["name"].isin(shown)], colors, widths)
        ax.set_xticks(looks["seeds"], [f"{k}\n(look {look})" for k, look in zip(looks["seeds"], looks["look"])])
        ax.set_xlabel("seeds")
        ax.set_ylabel(metric_label(race.metric, MARKDOWN))
    if len(panels) > 1:
        axes[0][1].set_title("those not eliminated", fontsize=10)
    handles = [plt.Line2D([], [], color=colors[n], marker="o", linewidth=widths[n], label=n) for n in names]
    handles.append(plt.Line2D([], [], color="0.25", marker="x", markersize=9, markeredgewidth=2.5, linestyle="none",
                              label="eliminated at this look"))
    figure.legend(handles=handles, loc="outside lower center", fontsize=8, title="configuration: outcome")
    figure.suptitle(f"{race.title}\nmean and 95% t-interval over each look's seeds (the race tests their paired "
                    "differences)", fontsize=10)
    return figure


def _race_lines(ax: plt.Axes, points: pd.DataFrame, colors: dict[str, Any], widths: dict[str, float]) -> None:
    sns.lineplot(points, x="x", y="value", hue="name", palette=colors, size="name", sizes=widths, err_style="bars",
                 errorbar=t_interval, marker="o", err_kws={"capsize": 4}, legend=False, ax=ax)
    gone = points[points["eliminated"]].groupby(["name", "x"], sort=False)["value"].mean().reset_index()
    ax.scatter(gone["x"], gone["value"], marker="x", s=140, linewidths=2.5, c=gone["name"].map(colors), zorder=3)


def draw_all(per_seed: pd.DataFrame, curves: pd.DataFrame, masks: dict[str, Path], long: pd.DataFrame,
             keys: list[str], metrics: list[str], precision: int, baseline: str, out: Path,
             race: RaceFigure | None = None) -> list[Path]:
    """Every figure the data allow (no curves logged, no mask maps, no configuration but the baseline, or no
    race or no look taken: that figure is left out)."""
    todo = {"metrics": lambda: metrics_figure(per_seed, metrics, keys)}
    if len(curves):
        todo["curves"] = lambda: curves_figure(curves, keys)
    if masks:
        todo["masks"] = lambda: mask_frequency_figure(masks)
    if (~long["baseline"]).any():
        todo["deltas"] = lambda: deltas_figure(long, metrics, precision, baseline)
    if race is not None and len(race.points):
        todo["race"] = lambda: race_figure(race)
    paths = []
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
        # disable=None: a bar on a terminal only, nothing in a log
        for name, make in tqdm(todo.items(), desc="figures", unit="figure", leave=False, disable=None):
            paths += draw(name, make(), out)
    return paths
