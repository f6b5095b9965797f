"""Statistics of a study's table: mean, standard deviation and n over seeds per configuration and metric,
tests against the baseline and against the best configuration, corrected across the table.

Two configurations are compared on the seeds both finished with a paired t-test (``scipy.stats.ttest_rel``,
at least two shared seeds), else with Welch's t-test (``ttest_ind(equal_var=False)``, at least two seeds
each); with fewer seeds there is no test (p is NaN: never significant, left out of the correction). A
value is NaN when any of its seeds logged NaN; it is then never best and never significant.

The tests of one kind (every cell against the baseline; every cell against its column's best) are one
family, corrected together with Holm (controls the family-wise error rate) or Benjamini-Hochberg
(controls the false discovery rate). A cell is tied with the best when their difference is not
significant after correction: a best value stands alone only when the data say so.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from functools import cache
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from model.tasks import Direction

Correction = Literal["holm", "bh"]
KEYS = ["config", "metric"]


def p_values(pairs: list[tuple[Mapping[int, float], Mapping[int, float]]]) -> np.ndarray:
    """Two-sided p of each pair (x, y) of seed -> value: a paired t-test over the seeds both have if there
    are two, else Welch's t-test if each has two values, else NaN. Pairs that take the same test on as
    many values go to scipy together, as the rows of one array."""
    out = np.full(len(pairs), np.nan)
    batches: dict[tuple, list] = defaultdict(list)  # (test, sizes) -> [(position, x values, y values)]
    for i, (x, y) in enumerate(pairs):
        shared = [seed for seed in x if seed in y]
        if len(shared) >= 2:
            batches["paired", len(shared)].append((i, [x[s] for s in shared], [y[s] for s in shared]))
        elif len(x) >= 2 and len(y) >= 2:
            batches["welch", len(x), len(y)].append((i, list(x.values()), list(y.values())))
    with warnings.catch_warnings():  # identical or constant seeds: scipy warns and returns NaN or 0, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        for (test, *_), batch in batches.items():
            rows, a, b = zip(*batch)
            a, b = np.array(a), np.array(b)
            if test == "paired":
                out[list(rows)] = stats.ttest_rel(a, b, axis=1).pvalue
            else:
                out[list(rows)] = stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue
    return out


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): the i-th smallest times (m - i), made monotone."""
    order = np.argsort(p)
    m = len(p)
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = scaled
    return out


def adjust(p: np.ndarray, method: Correction) -> np.ndarray:
    """Adjusted p-values over the finite ones (NaN stays NaN and does not count toward m)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = holm(p[finite]) if method == "holm" else stats.false_discovery_control(p[finite], method="bh")
    return out


def aggregate(values: pd.DataFrame, planned: pd.Series, metrics: list[str]) -> pd.DataFrame:
    """values: one row per (config, seed, metric) a finished run logged, column ``value``; planned: seeds
    planned per config. -> one row per (config in planned, metric): mean, std, n (0: no value), planned."""
    by = values.groupby(KEYS)["value"]
    out = by.agg(mean="mean", std="std", n="size")
    out.loc[values["value"].isna().groupby([values[k] for k in KEYS]).any(), ["mean", "std"]] = np.nan
    out = out.reindex(pd.MultiIndex.from_product([planned.index, metrics], names=KEYS))
    out["n"] = out["n"].fillna(0).astype(int)
    out["planned"] = planned.reindex(out.index.get_level_values("config")).to_numpy()
    return out


def compare(values: pd.DataFrame, summary: pd.DataFrame, baselines: dict[str, str], directions: dict[str, Direction],
            correction: Correction = "holm", alpha: float = 0.05,
            columns: dict[str, Hashable] | None = None) -> pd.DataFrame:
    """``aggregate``'s table with, per cell: delta (mean minus its baseline's: ``baselines`` maps every config
    to its baseline config), p and p_adj against the baseline, significant; best (by the metric's direction,
    in each table column: ``columns`` maps a config to its column group, default one for all; every config
    with the best mean) and p_best, p_best_adj, tied against the first best."""
    series: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)  # (config, metric) -> seed -> value
    for config, seed, metric, value in values[["config", "seed", "metric", "value"]].itertuples(index=False):
        series[config, metric][seed] = value
    out = summary.copy()
    out["delta"] = out["mean"].to_numpy() - out["mean"].reindex([(baselines[c], m) for c, m in out.index]).to_numpy()

    column_of = {config: (columns or {}).get(config) for config in out.index.get_level_values("config")}
    best = {}  # (metric, column group) -> the config the others there are tested against
    out["best"] = False
    table_columns = pd.Series([(m, column_of[c]) for c, m in out.index], index=out.index)
    for (metric, group), column in out["mean"].groupby(table_columns):
        column = column.dropna()
        if len(column):
            top = column.min() if directions[metric] == "lower" else column.max()
            best[metric, group] = column.index[column == top][0][0]
            out.loc[column.index[column == top], "best"] = True  # equal means share the bold

    def against(versus: Callable[[str, str], str | None]) -> np.ndarray:
        """p of every cell against the cell of config ``versus(config, metric)`` (NaN against itself or none)."""
        pairs = []
        for config, metric in out.index:
            other = versus(config, metric)
            pairs.append((series.get((config, metric), {}), series.get((other, metric), {}) if other != config
                          else {}))
        return p_values(pairs)

    out["p"] = against(lambda config, metric: baselines[config])
    out["p_adj"] = adjust(out["p"].to_numpy(), correction)
    out["significant"] = out["p_adj"] < alpha
    out["p_best"] = against(lambda config, metric: best.get((metric, column_of[config])))
    out["p_best_adj"] = adjust(out["p_best"].to_numpy(), correction)
    out["tied"] = ~out["best"] & out["mean"].notna() & ~(out["p_best_adj"] < alpha)
    return out


def seeds_needed(p: float, n: int, alpha: float, most: int = 1000) -> int | None:
    """About how many seeds a paired t-test that gave ``p`` on ``n`` seeds needs for p < ``alpha`` at the same
    effect size (t / sqrt(n) held fixed); None when no number up to ``most`` would do (or no effect was seen)."""
    if p == 0:  # no spread at all in the differences: any number of seeds shows it
        return n
    if not (np.isfinite(p) and p < 1 and n >= 2):
        return None
    effect = stats.t.isf(p / 2, n - 1) / np.sqrt(n)
    seeds = np.arange(2, most + 1)
    reached = effect * np.sqrt(seeds) > stats.t.isf(alpha / 2, seeds - 1)
    return int(seeds[reached][0]) if reached.any() else None


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean (a point for a single value), for seaborn's ``errorbar``."""
    values = np.asarray(values, dtype=float)
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean
    half = _t_quantile(0.5 + level / 2, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    return mean - half, mean + half


@cache
def _t_quantile(q: float, dof: int) -> float:
    return float(stats.t.ppf(q, dof))
