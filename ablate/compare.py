"""The comparison printed after a study finishes: mean ± std over seeds of the report metrics per config.

Deliberately minimal (no significance tests, no LaTeX); the report module replaces it.
"""

from __future__ import annotations

import statistics

from tabulate import tabulate

from ablate.ledger import Record, state
from ablate.study import Run, Study, matches


def comparison_table(study: Study, runs: list[Run], records: dict[str, Record]) -> str:
    report = study.spec.report
    configs: dict[str, list[Run]] = {}
    for run in runs:
        configs.setdefault(run.config_hash, []).append(run)
    axes = list(dict.fromkeys(k for run in runs for k in run.settings))
    rows = []
    for group in configs.values():
        finished = [records[r.key] for r in group if state(records.get(r.key)) == "done"]
        cells = [_mean_std([v for rec in finished if (v := rec.metric(m)) is not None]) for m in report.metrics]
        mark = "baseline" if report.baseline and matches(group[0], report.baseline) else ""
        rows.append([*(group[0].settings.get(a, "") for a in axes), mark, f"{len(finished)}/{len(group)}", *cells])
    return tabulate(rows, headers=[*axes, "", "seeds", *report.metrics], tablefmt="github")


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"
