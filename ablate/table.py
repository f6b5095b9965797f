"""One table, two renderings: Markdown (tabulate) and LaTeX (pandas ``Styler.to_latex``, booktabs rules,
multi-level headers for grouped columns).

Headers are the task table's labels (``model/tasks.py``'s ``paper_label``): in LaTeX a metric's task over its name
(``RGB→semseg`` over ``mIoU ↑``), tasks grouping their metrics; in Markdown one header row, ' · ' between the levels.

The input is long, one row per (configuration, metric) with ``stats.compare``'s columns and the
configuration's settings; the row keys and column keys of ``Layout`` pivot it wide. A cell reads
``mean ± sd (delta*, n=k/m)``: the delta against the baseline (``*``: significant after correction),
``n=k/m`` when only k of the m planned seeds finished; bold is the best of its column, † a value
not significantly different from the best. A race's table has a ``race`` column before the metrics (in each
column group): a configuration's seeds and outcome, ``3 seeds, eliminated at look 1 (p=0.013 < 0.035)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from model.tasks import direction, paper_label

GROUP = "group"  # the level of the column index that holds the metrics' tasks (their groups)
HEADER = "header"  # the level of the column index that holds the metric names
RACE = "race"  # the race column's header


@dataclass(frozen=True)
class Layout:
    rows: list[str]  # settings keys, one index level each
    columns: list[str]  # settings keys, one header level each above the metrics
    metrics: list[str]
    precision: int = 3
    race: bool = False  # a race column (``long`` has ``ablate/race_report.py``'s columns)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "→": r"$\to$", "δ": r"$\delta$"}


def latex_escape(text: str) -> str:
    """Plain text for LaTeX's text mode; ``->`` (as in ``rgb->depth``) becomes an arrow."""
    return r"$\to$".join("".join(_LATEX_SPECIAL.get(c, c) for c in part) for part in text.split("->"))


@dataclass(frozen=True)
class Markup:
    """What differs between the renderings of one cell."""

    pm: str
    bold: str  # format strings with one {} for the text
    tie: str
    small: str
    arrows: dict[str, str]
    escape: Callable[[str], str] = str


MARKDOWN = Markup(pm=" ± ", bold="**{}**", tie="†", small="{}", arrows={"lower": "↓", "higher": "↑"})
LATEX = Markup(pm=r" $\pm$ ", bold=r"\textbf{{{}}}", tie=r"$^\dagger$", small=r"{{\scriptsize {}}}",
               arrows={"lower": r"$\downarrow$", "higher": r"$\uparrow$"}, escape=latex_escape)


def metric_label(metric: str, markup: Markup) -> str:
    """On one line (an axis): ``eval/rgb_to_semseg/miou`` -> ``RGB→semseg mIoU ↑``, ``eval/loss/mean`` ->
    ``loss (mean) ↓``."""
    return f"{markup.escape(paper_label(metric).line)} {markup.arrows[direction(metric)]}"


def metric_header(metric: str, markup: Markup) -> tuple[str, str]:
    """Over two header levels: ``eval/rgb_to_semseg/miou`` -> (``RGB→semseg``, ``mIoU ↑``)."""
    label = paper_label(metric)
    return markup.escape(label.group), f"{markup.escape(label.name)} {markup.arrows[direction(metric)]}"


def short(key: str) -> str:
    """A settings key as a header: the last part of a dotted config key."""
    return key.rsplit(".", 1)[-1]


def cell(row: pd.Series, markup: Markup, precision: int) -> str:
    n, planned = int(row["n"]), int(row["planned"])
    if n == 0:
        return markup.small.format(f"(n=0/{planned})")
    value = "NaN" if math.isnan(row["mean"]) else f"{row['mean']:.{precision}f}"
    if n > 1 and not math.isnan(row["std"]):
        value += f"{markup.pm}{row['std']:.{precision}f}"
    if row["best"]:
        value = markup.bold.format(value)
    if row["tied"]:
        value += markup.tie
    notes = ["baseline"] if row["baseline"] else []
    if not row["baseline"] and not math.isnan(row["delta"]):
        notes.append(f"{row['delta']:+.{precision}f}" + "*" * bool(row["significant"]))
    if n < planned:
        notes.append(f"n={n}/{planned}")
    return value + (" " + markup.small.format(f"({', '.join(notes)})") if notes else "")


def race_words(row: pd.Series) -> str:
    """A configuration's race outcome: ``winner``, ``eliminated at look 1 (p=0.013 < 0.035)``, ..."""
    if row["race_outcome"] != "eliminated":
        return row["race_outcome"]
    return f"eliminated at look {row['race_look']} (p={row['race_p']:.2g} < {row['race_alpha']:.2g})"


def wide(long: pd.DataFrame, layout: Layout, markup: Markup) -> pd.DataFrame:
    """Cells as text: rows by ``layout.rows`` values, columns by ``layout.columns`` values, then the metrics' tasks
    (in the order of their first metric), then the metrics.

    ``long`` needs the settings columns (categorical, in the study's order), ``metric``, and ``compare``'s;
    with no row keys the table has one row."""
    headers = {m: metric_header(m, markup) for m in layout.metrics}
    long = long.assign(**{GROUP: long["metric"].map(lambda m: headers[m][0]),
                          HEADER: long["metric"].map(lambda m: headers[m][1]),
                          "text": [cell(row, markup, layout.precision) for _, row in long.iterrows()]})
    if layout.race:
        race = long.drop_duplicates("config")
        long = pd.concat([race.assign(**{GROUP: "", HEADER: RACE, "text": [
            markup.escape(f"{row['race_seeds']} seeds, {race_words(row)}") for _, row in race.iterrows()]}), long])
        headers = {RACE: ("", RACE), **headers}
    for level, i in ((GROUP, 0), (HEADER, 1)):
        long[level] = pd.Categorical(long[level], list(dict.fromkeys(h[i] for h in headers.values())))
    rows = layout.rows or ["_"]
    if not layout.rows:
        long["_"] = ""
    table = long.pivot(index=rows, columns=[*layout.columns, GROUP, HEADER], values="text").fillna("")
    table.index = _index([tuple(markup.escape(str(v)) for v in _tuple(i)) for i in table.index],
                         [markup.escape(short(key)) for key in layout.rows] or [None])
    table.columns = _index([(*(markup.escape(f"{short(k)}={v}") for k, v in zip(layout.columns, c[:-2])), *c[-2:])
                            for c in map(_tuple, table.columns)], [None] * (len(layout.columns) + 2))
    return table


def _tuple(label) -> tuple:
    return label if isinstance(label, tuple) else (label,)


def _index(labels: list[tuple], names: list[str | None]) -> pd.Index:
    """A MultiIndex for several levels, a plain Index for one (a one-level MultiIndex prints as tuples)."""
    if len(names) > 1:
        return pd.MultiIndex.from_tuples(labels, names=names)
    return pd.Index([label[0] for label in labels], name=names[0])


def with_row_keys(table: pd.DataFrame) -> pd.DataFrame:
    """The row keys as the first columns, named in the bottom header level (the table's own index dropped)."""
    body = table.reset_index(drop=True)
    if table.index.names == [None]:  # no row keys: one row
        return body
    keys = table.index.to_frame(index=False)
    if table.columns.nlevels > 1:
        keys.columns = pd.MultiIndex.from_tuples([("",) * (table.columns.nlevels - 1) + (k,) for k in keys.columns])
    return pd.concat([keys, body], axis=1)


def to_markdown(table: pd.DataFrame, note: str) -> str:
    """A pipe table (grouped headers joined with ' · '), then the note."""
    flat = with_row_keys(table)
    flat.columns = [" · ".join(p for p in _tuple(col) if p) for col in flat.columns]
    return flat.to_markdown(index=False) + "\n\n" + note + "\n"


def to_latex(table: pd.DataFrame, caption: str, label: str, note: str) -> str:
    """A floating table with booktabs rules, shrunk to the line width if wider (graphicx's ``\\resizebox``),
    and the note under the tabular. Needs ``\\usepackage{booktabs,graphicx}``."""
    flat = with_row_keys(table)
    keys = flat.shape[1] - table.shape[1]
    latex = flat.style.hide(axis="index").to_latex(
        hrules=True, caption=caption, label=label, position_float="centering", multicol_align="c",
        column_format="l" * keys + "c" * table.shape[1],
    )
    shrink = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%" + "\n\\begin{tabular}"
    return (latex.replace("\\begin{tabular}", shrink).replace("\\end{tabular}", "\\end{tabular}}")
            .replace("\\end{table}", f"\\par\\smallskip{{\\footnotesize {note}}}\n\\end{{table}}"))
