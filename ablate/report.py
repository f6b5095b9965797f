"""``ablate report``: a study's table, the statistics behind it and its figures, in ``reports/<name>/``.

    table.md, table.tex   the same table (``ablate/table.py``): mean ± sd over seeds per configuration and
                          metric, the delta against the baseline with its corrected test, the best in bold,
                          ties marked, seeds short of the plan shown; a legend and a provenance line under it
    summary.csv           every number behind the table (``ablate/stats.py``), with the configurations' settings
    *.pdf, *.png          the figures (``ablate/figures.py``)
    report.json           the options it was made with (``ablate submit`` leaves a report made with others alone)

A report of unchanged results is the same files, left untouched. Where the study file, the options, the code and
the snapshot (a SQLite store unwritten since) are those of the report in the folder, it is that report: nothing is
computed (nor scipy, MLflow or seaborn imported). Otherwise a file is written only where its content changed, the
figures are drawn again only where their inputs or the code changed, and the files are logged to MLflow again
only where one changed (``.digests.json`` in the folder records all three; ``ablate/figures.py`` draws the same
bytes from the same data).

The same files are logged to the study's parent run in MLflow (``report/``). Under the legend, notes say
what the marks cannot: a metric that has one value in every run (nothing is marked best there), and, when
no difference is significant, how many seeds the largest effect seen would need to be.

A race (a study with ``race:``) is replayed from the same snapshot (``ablate/race_report.py``): the table gets a
race column (each configuration's seeds and outcome), the race's metric its bold and ties from the race, the
legend what a race's table may claim, the provenance line the run-hours of the full grid, and a race figure.

Numbers come from finished runs only (MLflow status FINISHED): a failed or missing seed lowers n, which
the table shows against the planned count. Runs of configurations the study file no longer has are left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from ablate import snapshot, study_cache
from ablate.schema import ReportSpec, StudyError
from ablate.study import Study, matches, settings_keys
from ablate.table import LATEX, MARKDOWN, Layout, Markup, short, to_latex, to_markdown, wide
from ablate.validate import layout_problems
from model.run_folder import RunFolder
from model.tasks import direction

if TYPE_CHECKING:
    from ablate.race_report import RaceReport

CORRECTIONS = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


class ReportError(StudyError):
    """A report that cannot be made; the message names what is missing and lists what exists."""


@dataclass
class Report:
    folder: Path
    markdown: str  # table.md's text
    files: list[Path]

    def __str__(self) -> str:
        """What the commands print: the table, then where the files went."""
        return f"\n{self.markdown}\nreport written to {self.folder}/ ({', '.join(p.name for p in self.files)})"


def make_report(study: Study, spec: ReportSpec, out: Path, figures: bool = True) -> Report:
    """Refresh the study's snapshot, compare its configurations and write the report into ``out``."""
    if study.spec.search is not None:
        raise ReportError(f"{study.path}: {study.name!r} is a search; a report compares a grid's configurations "
                          "over seeds (see `ablate status` for the trials, then re-run the best ones as a grid study)")
    made = _digests(out)
    if (same := _same_as(study, spec, figures)) is not None and made.get("report") == same:  # that report
        files = [out / name for name in made.get("files", [])]
        if files and all(path.is_file() for path in files):
            return Report(out, (out / "table.md").read_text(encoding="utf-8"), files)
    from ablate.stats import aggregate, compare  # scipy: only where there is something to compute

    snap = snapshot.refresh(study, spec.curves)
    plan = planned_runs(study)
    finished = snap.runs[snap.runs["status"] == "FINISHED"][["run_id", "run_key"]].merge(
        plan, left_on="run_key", right_on="key")
    _check_logged(study, spec.metrics, snap.metrics)
    baselines, baseline = _baselines(study, spec, plan, finished)

    values = snap.metrics[snap.metrics["metric"].isin(spec.metrics)].merge(finished, on="run_id")
    values = values[["config", "seed", "metric", "value"]]
    summary = aggregate(values, plan.groupby("config", sort=False).size(), spec.metrics)
    configs = plan.drop_duplicates("config").set_index("config").drop(columns=["key", "seed"])
    column_groups = {c: tuple(row) for c, row in zip(configs.index, configs[spec.columns].itertuples(index=False))}
    result = compare(values, summary, baselines, {m: direction(m) for m in spec.metrics}, spec.correction,
                     spec.alpha, column_groups)
    long = result.reset_index().join(configs, on="config")
    long["baseline"] = long["config"].map(baselines) == long["config"]  # a baseline itself
    race = None
    if study.spec.race is not None:
        from ablate import race_report  # a race's own: it reads the store (MLflow) where a race is replayed

        race = race_report.replay(study, snap.runs[["run_id", "run_key", "status"]].merge(
            plan, left_on="run_key", right_on="key"), snap.metrics)
        long = race.mark(long)
    constant = _constant(values)
    long.loc[long["metric"].isin(constant), ["best", "tied"]] = False  # equal everywhere: nothing is best

    out.mkdir(parents=True, exist_ok=True)
    provenance = _provenance(study, snap.runs, finished)
    notes = _notes(spec, long, baselines, constant)
    markdown, files = _write_tables(study, spec, long, baseline, notes, provenance, out, race)
    if figures:
        first = finished.sort_values(["label", "seed"]).drop_duplicates("label")  # one run per configuration
        found = snapshot.artifacts(study, list(first["run_id"]), RunFolder.MASK_FREQUENCY_ARTIFACT)
        masks = {str(label): found[r] for label, r in zip(first["label"], first["run_id"]) if r in found}
        files += _figures(out, values.join(configs, on="config"), snap.curves.merge(finished, on="run_id"), masks,
                          long, settings_keys(study.spec), spec.metrics, spec.precision, baseline,
                          race.figure() if race else None)
    files.append(out / OPTIONS)
    _write(files[-1], json.dumps(spec.model_dump(), indent=2))
    _log_to_study_run(study, files)
    # What this report was made from, as it is now (a run recorded meanwhile: None, made again next time).
    _note_digest(out, report=_same_as(study, spec, figures), files=[path.name for path in files])
    return Report(out, markdown, files)


OPTIONS = "report.json"
DIGESTS = ".digests.json"  # what the folder's report and figures were made from, what was logged (docstring)


def _write(path: Path, text: str) -> None:
    """``text`` into ``path``, unless it holds that already (an unchanged report leaves its files untouched)."""
    data = text.encode()
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


def _digests(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / DIGESTS).read_text())
    except (OSError, ValueError):
        return {}


def _note_digest(out: Path, **digests: Any) -> None:
    _write(out / DIGESTS, json.dumps(_digests(out) | digests, indent=1))


def _same_as(study: Study, spec: ReportSpec, figures: bool) -> str | None:
    """A digest of what a report depends on: the study file, the options, the code and the snapshot's state, where
    the store is unchanged since the snapshot was refreshed (None where it may have changed, or cannot tell)."""
    if (state := snapshot.unchanged(study, spec.curves)) is None:
        return None
    return _digest(study.path.read_bytes(), spec.model_dump(), figures, study_cache.code_digest(), state,
                   *(version(package) for package in ("matplotlib", "seaborn") if figures))


def _figures(out: Path, per_seed: pd.DataFrame, curves: pd.DataFrame, masks: dict[str, Path], long: pd.DataFrame,
             keys: list[str], metrics: list[str], precision: int, baseline: str, race: Any) -> list[Path]:
    """``ablate.figures.draw_all``'s files, drawn again only when its inputs or the code changed (matplotlib and
    seaborn are not even imported otherwise)."""
    inputs = (per_seed, curves, masks, long, keys, metrics, precision, baseline, race)
    digest = _digest(study_cache.code_digest(), version("matplotlib"), version("seaborn"), *inputs)
    made = _digests(out)
    drawn = [out / name for name in made.get("figure_files", [])]
    if made.get("figures") == digest and all(path.is_file() for path in drawn):
        return drawn
    from ablate.figures import draw_all

    drawn = draw_all(*inputs[:-1], out, race)
    _note_digest(out, figures=digest, figure_files=[path.name for path in drawn])
    return drawn


def _digest(*items: Any) -> str:
    """A digest of tables (their values, columns and types), files (their bytes), mappings, sequences, dataclasses
    and plain values."""
    digest = hashlib.sha256()

    def feed(item: Any) -> None:
        if isinstance(item, pd.DataFrame):
            digest.update(repr(list(zip(item.columns, item.dtypes))).encode())  # a category's order too
            digest.update(pd.util.hash_pandas_object(item, index=False).to_numpy().tobytes())
        elif isinstance(item, Path):
            digest.update(item.read_bytes())
        elif isinstance(item, dict):
            for pair in item.items():
                feed(pair)
        elif isinstance(item, (list, tuple)):
            digest.update(f"[{len(item)}".encode())
            for part in item:
                feed(part)
        elif dataclasses.is_dataclass(item):
            feed([getattr(item, f.name) for f in dataclasses.fields(item)])
        else:
            digest.update(repr(item).encode())

    feed(items)
    return digest.hexdigest()


def other_options(out: Path, spec: ReportSpec) -> dict[str, Any]:
    """The options the report in ``out`` was made with where they differ from ``spec`` (empty: the same, or no
    report with a record of its options)."""
    try:
        made = json.loads((out / OPTIONS).read_text())
    except (OSError, ValueError):
        return {}
    wanted = json.loads(json.dumps(spec.model_dump()))
    return {key: value for key, value in made.items() if wanted.get(key) != value}


def report_once_ended(study: Study, out: Path, named: str) -> str:
    """What ``ablate submit`` says once every run has ended: the study file's report, written into ``out``; or,
    where ``out`` holds a report made with other options (``ablate report`` with options), that it is left as
    it is and how to bring it up to date (``named``: the study as the user named it)."""
    if made := other_options(out, study.spec.report):
        return (f"{out}/ was made with other options than the study file's report section "
                f"({', '.join(f'{k}={v!r}' for k, v in made.items())}); left as it is: `ablate report {named}` "
                "with those options brings it up to date, without them writes the study file's")
    return str(make_report(study, study.spec.report, out))


def _log_to_study_run(study: Study, files: list[Path]) -> None:
    """The report's files as artifacts of the study's parent run (``report/``), in place of an earlier report's
    (where the artifact store can delete: a local one can); nothing when these files were logged to this store
    last time."""
    out = files[0].parent
    logged = _digest(study.store.uri, {path.name: path for path in files})
    if _digests(out).get("logged") == logged:
        return
    # MLflow imported only here: a report of unchanged results does without it.
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from ablate.ledger import Ledger

    ledger = Ledger(study, create=False)
    if (run_id := ledger.study_run()) is None:
        return
    # A server's mlflow-artifacts: URIs are resolved against the tracking URI.
    repository = get_artifact_repository(ledger.client.get_run(run_id).info.artifact_uri, ledger.client.tracking_uri)
    try:
        repository.delete_artifacts("report")
    except (MlflowException, NotImplementedError, OSError):  # a store that cannot: new files replace old ones
        pass
    for path in files:
        ledger.client.log_artifact(run_id, str(path), "report")
    _note_digest(out, logged=logged)


def _constant(values: pd.DataFrame) -> dict[str, float]:
    """Metrics with one and the same value in every finished run (at least two) -> that value."""
    by = values.groupby("metric")["value"]
    same = (by.nunique(dropna=False) == 1) & (by.size() > 1)
    return {metric: by.first()[metric] for metric in same[same].index}


def _notes(spec: ReportSpec, long: pd.DataFrame, baselines: dict[str, str], constant: dict[str, float]) -> list[str]:
    """What the table's marks do not say (module docstring)."""
    notes = [f"{metric} is {value:.{spec.precision}f} in every run: it does not tell the configurations apart "
             "(none is marked best)." for metric, value in constant.items()]
    tests = long[np.isfinite(long["p"]) & ~long["metric"].isin(constant)]
    if not len(tests) and np.isfinite(long.loc[~long["baseline"], "delta"]).any():
        notes.append("No difference from the baseline can be tested: a t-test needs two seeds of each "
                     "configuration (list more seeds).")
    elif len(tests) and not tests["significant"].any():
        n = long.set_index(["config", "metric"])["n"]
        seeds = [min(row.n, n[baselines[row.config], row.metric]) for row in tests.itertuples()]
        from ablate.stats import seeds_needed

        needed = [k for k in map(seeds_needed, tests["p"], seeds, [spec.alpha / len(tests)] * len(seeds)) if k]
        reach = (f"the largest effect seen would need about {min(needed)} seeds" if needed else
                 "no effect seen would reach it with up to 1,000 seeds")
        notes.append(f"No difference from the baseline is significant at {spec.alpha:g} after "
                     f"{CORRECTIONS[spec.correction]} correction over {len(tests)} tests with {max(seeds)} seeds at "
                     f"most: {reach} (a paired t-test at the effect sizes observed).")
    return notes


def _write_tables(study: Study, spec: ReportSpec, long: pd.DataFrame, baseline: str, notes: list[str],
                  provenance: str, out: Path, race: RaceReport | None = None) -> tuple[str, list[Path]]:
    """table.md, table.tex and summary.csv (a race's legend after the legend, notes between it and the
    provenance line); returns the Markdown and the paths."""
    keys = settings_keys(study.spec)
    layout = Layout(spec.rows if spec.rows is not None else [k for k in keys if k not in spec.columns],
                    spec.columns, spec.metrics, spec.precision, race is not None)
    caption = spec.caption or study.spec.description or study.name
    tests = int(np.isfinite(long["p"]).sum())

    def legends(markup: Markup) -> list[str]:
        legend = _legend(spec, baseline, tests, markup)
        return [legend] if race is None else [legend, race.legend(markup)]

    markdown = f"**{caption}**\n\n" + to_markdown(wide(long, layout, MARKDOWN), "\n\n".join(
        [*legends(MARKDOWN), *(f"Note: {n}" for n in notes), provenance]))
    latex = to_latex(wide(long, layout, LATEX), LATEX.escape(caption), spec.label or f"tab:{study.name}",
                     r" \\ ".join([*legends(LATEX), *(LATEX.escape(f"Note: {n}") for n in notes),
                                   LATEX.escape(provenance)]))
    files = [out / "table.md", out / "table.tex", out / "summary.csv"]
    for path, text in zip(files, (markdown, latex, long.to_csv(index=False))):
        _write(path, text)
    return markdown, files


def report_spec(study: Study, options: dict[str, Any]) -> ReportSpec:
    """The study's ``report`` section with command-line options (those not None) in place of its keys."""
    merged = study.spec.report.model_dump() | {k: v for k, v in options.items() if v is not None}
    try:
        spec = ReportSpec.model_validate(merged)
    except ValidationError as e:
        raise ReportError("bad report options:\n" + "\n".join(
            f"  --{'.'.join(map(str, err['loc'])) or 'options'}: {err['msg'].removeprefix('Value error, ')}"
            f" (got {err['input']!r})" for err in e.errors())) from None
    if problems := layout_problems(study.spec.model_copy(update={"report": spec})):
        raise ReportError("bad report options:\n" + "\n".join(f"  {p}" for p in problems))
    return spec


def planned_runs(study: Study) -> pd.DataFrame:
    """One row per planned run: key, config (hash), seed, masking (the study's choice, ``Run.masking``), family,
    label and the settings (categorical, in the study's order; lists and mappings as text)."""
    plan = pd.DataFrame([{"key": r.key, "config": r.config_hash, "seed": r.seed, "masking": r.masking,
                          "family": r.family, "label": r.label,
                          **{k: v if np.isscalar(v) else str(v) for k, v in r.settings.items()}}
                         for r in study.runs])
    for key in dict.fromkeys(("masking", "family", "label", *study.runs[0].settings)):
        plan[key] = pd.Categorical(plan[key], categories=list(dict.fromkeys(plan[key])))
    return plan


def _check_logged(study: Study, metrics: list[str], logged: pd.DataFrame) -> None:
    """Every metric must have been logged by some run."""
    names = set(logged["metric"])
    for metric in metrics:
        if metric in names:
            continue
        prefix = metric.split("/")[0] + "/"
        near = sorted(n for n in names if n.startswith(prefix))
        found = f"under {prefix}: {', '.join(near)}" if near else f": {', '.join(sorted(names)) or 'none yet'}"
        raise ReportError(f"report.metrics: {metric!r}: no run of study {study.name!r} logged it; metrics logged "
                          + found)


def _baselines(study: Study, spec: ReportSpec, plan: pd.DataFrame, finished: pd.DataFrame) -> tuple[dict, str]:
    """Each configuration's baseline (config hash -> config hash), and how the legend names it.

    ``report.baseline`` picks one configuration (default: the study's first), or several that differ in some
    settings (``{masking: random}`` in a masking x budget grid): each configuration is then compared with the
    picked one that has its own values of those settings (random at the same budget)."""
    runs = {r.config_hash: r for r in study.runs}
    labels = {config: run.label for config, run in runs.items()}
    if spec.baseline is None:
        picked = [plan["config"].iloc[0]]
    else:
        picked = [config for config, run in runs.items() if matches(run, spec.baseline)]
    if not picked:
        raise ReportError(f"report.baseline: {spec.baseline!r} matches no configuration of study {study.name!r}; "
                          f"configurations: {list(labels.values())}")
    free = [k for k in settings_keys(study.spec) if len({str(runs[c].settings.get(k)) for c in picked}) > 1]
    out = {}
    for config, run in runs.items():
        same = [b for b in picked if all(runs[b].settings.get(k) == run.settings.get(k) for k in free)]
        if not same:
            raise ReportError(f"report.baseline: {spec.baseline!r} picks {[labels[b] for b in picked]}, which differ "
                              f"in {free}; {labels[config]!r} has none at its own {free}")
        out[config] = same[0]
    done = set(finished["config"])
    if missing := [b for b in dict.fromkeys(out.values()) if b not in done]:
        raise ReportError(f"report.baseline: {labels[missing[0]]!r} has no finished run (0 of "
                          f"{int((plan['config'] == missing[0]).sum())} planned); configurations with finished runs: "
                          f"{[labels[c] for c in dict.fromkeys(finished['config'])] or 'none yet'}")
    if not free:
        return out, labels[picked[0]]
    return out, " ".join(f"{k}={v}" for k, v in spec.baseline.items()) + f" at the same {', '.join(map(short, free))}"


def _legend(spec: ReportSpec, baseline_label: str, tests: int, markup: Markup) -> str:
    return (f"Mean{markup.pm}sd over seeds; in brackets the difference from the baseline "
            f"({markup.escape(baseline_label)}), * where significant at the {spec.alpha:g} level after "
            f"{CORRECTIONS[spec.correction]} correction over {tests} tests (paired t-test over shared seeds, else "
            f"Welch); n=k/m: k of m planned seeds finished. {markup.bold.format('Bold')}: best; {markup.tie}: not "
            "significantly different from the best.")


def _provenance(study: Study, runs: pd.DataFrame, finished: pd.DataFrame) -> str:
    done = runs[runs["run_id"].isin(finished["run_id"])]
    hours = float((done["end_ms"] - done["start_ms"]).sum()) / 3.6e6
    code = ", ".join(sorted(set(done["code_version"]))) or "none"
    study_hash = hashlib.sha256(study.path.read_bytes()).hexdigest()[:12]
    race = ""
    if study.spec.race is not None:
        from ablate import race_report

        race = race_report.cost(study, hours, len(done))
    return (f"Code {code}; study {study.name} {study_hash}; seeds {', '.join(map(str, study.spec.seeds))}; "
            f"{len(done)} finished runs, {hours:.2f} run-hours (MLflow start to end).{race}")
