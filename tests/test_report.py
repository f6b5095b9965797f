"""Reports on a real MLflow store filled with known values the way the submitter records runs: numbers equal
scipy's, marks where they belong, missing seeds and NaN shown, bad input named, the LaTeX compiles."""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.collections import PolyCollection
from mlflow.entities import Metric
from scipy import stats

from ablate.cli import main
from ablate.ledger import Ledger
from ablate.report import ReportError, make_report, report_spec
from ablate.schema import StudyError
from ablate.stats import adjust, p_values
from ablate.study_file import load_study

LOSS, ACC = "eval/loss/mean", "eval/acc/mean"
MIOU, DELTA1, ABS_REL = "eval/rgb_to_semseg/miou", "eval/rgb_to_depth/delta1", "eval/rgb_to_depth/abs_rel"
SEEDS = [0, 1, 2]
# config -> metric -> value per seed; a seed left out never finished. block: seed 1 failed, seed 2 never ran.
KNOWN = {
    "random": {LOSS: [2.00, 2.10, 2.20], ACC: [0.50, 0.52, 0.51]},
    "dirichlet": {LOSS: [1.50, 1.62, 1.71], ACC: [0.60, 0.61, 0.63]},
    "block": {LOSS: [1.90], ACC: [0.58]},
    "aligned": {LOSS: [1.53, 1.60, 1.74], ACC: [0.59, 0.60, float("nan")]},
}
FAMILIES = [*KNOWN, "sparse"]  # sparse: planned, nothing recorded


def write_study(folder: Path, data_root, name: str = "known", seeds: list[int] = SEEDS,
                grid: dict | None = None) -> Path:
    study = {"name": name, "description": "Known values", "seeds": seeds,
             "base": {"model": "tiny", "train.steps": 4, "data.root": str(data_root[0])},
             "grid": grid or {"masking": FAMILIES},
             "report": {"baseline": {"masking": "random"}, "metrics": [LOSS, ACC]}}
    path = folder / "studies" / f"{name}.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def record(ledger: Ledger, parent: str, run, values: dict[str, float], status: str = "FINISHED") -> None:
    """One child run as the submitter and the trainer leave it: tags, a loss curve, final metrics, status."""
    run_id = ledger.prepare(run, None, parent, {}).run_id
    curve = [Metric("train/loss", 5.0 - step / 10 - run.seed / 100, 0, step) for step in range(0, 40, 10)]
    final = [Metric(name, value, 0, 40) for name, value in values.items()]
    ledger.client.log_batch(run_id, metrics=curve + final, synchronous=True)
    ledger.client.set_terminated(run_id, status=status)


@pytest.fixture(scope="module")
def known(data_root, tmp_path_factory):
    """The study, with every run of KNOWN recorded and block's seed 1 failed."""
    study = load_study(write_study(tmp_path_factory.mktemp("report"), data_root))
    ledger = Ledger(study)
    parent = ledger.parent_id()
    for run in study.runs:
        masking = run.settings["masking"]
        values = {m: v[run.seed] for m, v in KNOWN.get(masking, {}).items() if run.seed < len(v)}
        if values:
            record(ledger, parent, run, values)
        elif masking == "block" and run.seed == 1:
            record(ledger, parent, run, {}, status="FAILED")
    return study


@pytest.fixture(scope="module")
def grouped(data_root, tmp_path_factory):
    """Two families at two input budgets, two seeds, every run finished."""
    grid = {"masking": ["random", "block"], "masking.input_budget": [64, 96]}
    study = load_study(write_study(tmp_path_factory.mktemp("grouped"), data_root, "grouped", [0, 1], grid))
    ledger = Ledger(study)
    parent = ledger.parent_id()
    for run in study.runs:
        block, budget = run.settings["masking"] == "block", run.settings["masking.input_budget"]
        record(ledger, parent, run, {LOSS: 2.0 - 0.2 * block - budget / 1000 + run.seed / 100,
                                     ACC: 0.5 + 0.1 * block + budget / 1000 + run.seed / 100,
                                     MIOU: 0.3 + 0.1 * block + run.seed / 50, DELTA1: 0.6 + run.seed / 20,
                                     ABS_REL: 0.2 - 0.05 * block + run.seed / 100})
    return study


def summary_of(study, tmp_path, **options) -> tuple[pd.DataFrame, str]:
    result = make_report(study, report_spec(study, options), tmp_path / "out", figures=False)
    table = pd.read_csv(result.folder / "summary.csv").set_index(["masking", "metric"])
    return table, result.markdown


def test_means_sds_p_values_and_corrections_equal_scipy(known, tmp_path):
    summary, _ = summary_of(known, tmp_path)
    for family, metrics in KNOWN.items():
        for metric, values in metrics.items():
            row = summary.loc[(family, metric)]
            assert row["n"] == len(values) and row["planned"] == len(SEEDS)
            assert np.isclose(row["mean"], np.mean(values), equal_nan=True)
            if len(values) > 1:
                assert np.isclose(row["std"], np.std(values, ddof=1), equal_nan=True)
    base = KNOWN["random"]
    tests = [(f, m) for f in ("dirichlet", "aligned") for m in (LOSS, ACC)]
    expected = [stats.ttest_rel(KNOWN[f][m], base[m]).pvalue for f, m in tests]
    for (family, metric), p in zip(tests, expected):
        assert np.isclose(summary.loc[(family, metric), "p"], p, equal_nan=True)
        delta = np.mean(KNOWN[family][metric]) - np.mean(base[metric])
        assert np.isclose(summary.loc[(family, metric), "delta"], delta, equal_nan=True)
    assert math.isnan(summary.loc[("block", LOSS), "p"])  # one seed: no test
    finite = [p for p in expected if np.isfinite(p)]
    assert len(finite) == 3  # aligned's accuracy is NaN: no test
    holm = [min(1.0, max((len(finite) - j) * q for j, q in enumerate(sorted(finite)[: i + 1])))
            for i in range(len(finite))]  # Holm's definition, step by step
    got = sorted(summary.loc[[t for t, p in zip(tests, expected) if np.isfinite(p)], "p_adj"])
    assert np.allclose(got, holm)

    bh, _ = summary_of(known, tmp_path, correction="bh")
    ps = bh.loc[[t for t, p in zip(tests, expected) if np.isfinite(p)], "p"].to_numpy()
    assert np.allclose(bh.loc[[t for t, p in zip(tests, expected) if np.isfinite(p)], "p_adj"],
                       stats.false_discovery_control(ps, method="bh"))


def test_welch_where_seeds_are_not_shared_and_nan_is_left_out_of_the_correction():
    a, b, c = {0: 1.0, 1: 1.2, 2: 1.1}, {3: 1.5, 4: 1.4, 5: 1.7}, {0: 1.5, 1: 1.4, 5: 1.7}
    p = p_values([(a, b), (a, c), (a, {0: 1.5}), (b, c)])
    assert np.isclose(p[0], stats.ttest_ind([1.0, 1.2, 1.1], [1.5, 1.4, 1.7], equal_var=False).pvalue)
    assert np.isclose(p[1], stats.ttest_rel([1.0, 1.2], [1.5, 1.4]).pvalue)  # two shared seeds: paired over them
    assert math.isnan(p[2])  # one value: no test
    assert np.isclose(p[3], stats.ttest_ind([1.5, 1.4, 1.7], [1.5, 1.4, 1.7], equal_var=False).pvalue)
    adjusted = adjust(np.array([0.01, np.nan, 0.04]), "holm")
    assert np.allclose(adjusted[[0, 2]], [0.02, 0.04]) and math.isnan(adjusted[1])
    assert np.allclose(adjust(np.array([0.04, 0.01, 0.01]), "holm"), [0.04, 0.03, 0.03])  # tied p, tied result


def test_best_in_bold_ties_marked_missing_seeds_and_nan_shown(known, tmp_path):
    summary, markdown = summary_of(known, tmp_path)
    lines = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("|")}
    # Loss: dirichlet is best; aligned is within noise of it (tied); random is significantly worse.
    assert summary.loc[("dirichlet", LOSS), "best"] and not summary.loc[("aligned", LOSS), "best"]
    assert summary.loc[("aligned", LOSS), "tied"] and not summary.loc[("random", LOSS), "tied"]
    assert stats.ttest_rel(KNOWN["random"][LOSS], KNOWN["dirichlet"][LOSS]).pvalue < 0.01
    assert "**1.610 ± 0.105**" in lines["dirichlet"]
    assert "1.623 ± 0.107†" in lines["aligned"]
    assert "†" not in lines["random"] and "**" not in lines["random"]
    # One finished seed of three: shown with its count, and with no test it cannot be told apart from the best.
    assert "1.900† (-0.200, n=1/3)" in lines["block"]
    assert summary.loc[("block", LOSS), "n"] == 1
    # A seed that logged NaN makes the value NaN, never best.
    assert math.isnan(summary.loc[("aligned", ACC), "mean"]) and "NaN" in lines["aligned"]
    assert summary.loc[("dirichlet", ACC), "best"]
    assert "(n=0/3)" in lines["sparse"]
    assert "2.100 ± 0.100 (baseline)" in lines["random"]
    assert "Code " in markdown and "seeds 0, 1, 2" in markdown and "10 finished runs" in markdown


def test_the_snapshot_follows_runs_that_finish_later(known, tmp_path):
    before, _ = summary_of(known, tmp_path)
    assert before.loc[("block", LOSS), "n"] == 1
    runs = known.dir / "snapshot" / "runs.parquet"
    written = runs.stat().st_mtime_ns
    summary_of(known, tmp_path)
    assert runs.stat().st_mtime_ns == written  # the store did not change: the snapshot is not rebuilt
    ledger = Ledger(known)
    late = next(r for r in known.runs if r.settings["masking"] == "block" and r.seed == 2)
    record(ledger, ledger.parent_id(), late, {LOSS: 1.8, ACC: 0.57})
    after, markdown = summary_of(known, tmp_path)
    assert after.loc[("block", LOSS), "n"] == 2 and np.isclose(after.loc[("block", LOSS), "mean"], 1.85)
    assert "n=2/3" in markdown
    ledger.client.delete_run(ledger.records()[late.key].run_id)  # leave the module's study as it was
    shutil.rmtree(known.dir / "snapshot")


def test_bad_input_names_it_and_lists_what_exists(known, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(known.path.parent.parent)
    assert main(["report", "nosuch"]) == 2
    assert "unknown study 'nosuch'" in (err := capsys.readouterr().err) and "studies in studies/: known" in err

    with pytest.raises(ReportError) as e:
        make_report(known, report_spec(known, {"metrics": ["eval/rgb_to_nope/miou"]}), tmp_path, figures=False)
    assert "'eval/rgb_to_nope/miou': no run of study 'known' logged it" in str(e.value)
    assert "eval/acc/mean" in str(e.value) and "eval/loss/mean" in str(e.value)

    with pytest.raises(ReportError) as e:
        make_report(known, report_spec(known, {"baseline": {"masking": "hard"}}), tmp_path, figures=False)
    assert "{'masking': 'hard'} matches no configuration of study 'known'; configurations: ['masking=random', " \
           "'masking=dirichlet'" in str(e.value)
    with pytest.raises(ReportError) as e:
        make_report(known, report_spec(known, {"baseline": {"masking": "sparse"}}), tmp_path, figures=False)
    assert "'masking=sparse' has no finished run (0 of 3 planned)" in str(e.value)
    assert "masking=random" in str(e.value)

    with pytest.raises(ReportError) as e:
        report_spec(known, {"columns": ["masking.input_budget"], "precision": -1})
    assert "--precision" in str(e.value)
    with pytest.raises(ReportError) as e:
        report_spec(known, {"columns": ["masking.input_budget"]})
    assert "report.columns: 'masking.input_budget': not a setting of this study; settings: ['masking']" in str(e.value)


def test_the_study_files_report_section_is_checked_with_the_rest(data_root, tmp_path):
    path = write_study(tmp_path, data_root)
    study = yaml.safe_load(path.read_text())
    for bad, expected in [
        ({"metrics": ["eval/loss/mean", "eval/speed"]}, "report.metrics: ['eval/speed']: no known direction (lower "
         "or higher is better); a metric name must contain one of model/tasks.py's metrics: 'loss' (lower), 'acc' "
         "(higher)"),
        ({"correction": "bonferroni"}, "report.correction: 'bonferroni': should be 'holm' or 'bh'"),
        ({"precision": 12}, "report.precision: 12: should be less than or equal to 8"),
        ({"rows": ["nope"]}, "report.rows: 'nope': not a setting of this study; settings: ['masking']"),
    ]:
        path.write_text(yaml.safe_dump(study | {"report": study["report"] | bad}))
        with pytest.raises(StudyError) as e:
            load_study(path)
        assert f"{path}: {expected}" in str(e.value)


def test_cli_writes_markdown_latex_csv_and_figures(known, tmp_path, capsys):
    ledger = Ledger(known)
    (tmp_path / "masks").mkdir()
    plt.imsave(tmp_path / "masks" / "mask_frequency.png", np.random.default_rng(0).random((60, 120)))
    for record_ in ledger.records().values():
        ledger.client.log_artifact(record_.run_id, str(tmp_path / "masks" / "mask_frequency.png"), "masks")
    out = tmp_path / "report"
    assert main(["report", str(known.path), "--out", str(out), "--caption", "Known values & more"]) == 0
    printed = capsys.readouterr().out
    assert "**1.610 ± 0.105**" in printed and str(out) in printed
    for name in ("metrics", "curves", "masks", "deltas"):
        for suffix in ("pdf", "png"):
            assert (out / f"{name}.{suffix}").stat().st_size > 1000, name
    latex = (out / "table.tex").read_text()
    assert r"\toprule" in latex and r"\bottomrule" in latex and r"\textbf{1.610 $\pm$ 0.105}" in latex
    assert r"Known values \& more" in latex and r"\label{tab:known}" in latex


def test_grouped_columns_get_two_header_levels_and_a_baseline_each(grouped, tmp_path):
    result = make_report(grouped, report_spec(grouped, {"columns": ["masking.input_budget"]}), tmp_path,
                         figures=False)
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["masking", "masking.input_budget", "metric"])
    # {masking: random} picks random at both budgets: each block cell is compared with random at its budget.
    assert np.allclose(summary.loc[("block", slice(None), LOSS), "delta"], -0.2)
    assert summary.loc[("random", slice(None), LOSS), "baseline"].all()
    assert summary.loc[("block", slice(None), LOSS), "best"].all()  # the best of each column, budget by budget
    assert "difference from the baseline (masking=random at the same input_budget)" in result.markdown
    header = result.markdown.splitlines()[2]
    assert header.split("|")[1].strip() == "masking"
    assert "input_budget=64 · loss · mean ↓" in header and "input_budget=96 · acc · mean ↑" in header
    latex = (tmp_path / "table.tex").read_text()
    assert r"\multicolumn{2}{c}{input\_budget=64}" in latex and r"\multicolumn{2}{c}{input\_budget=96}" in latex
    assert "random" in latex and "block" in latex

    every_setting_a_column = make_report(grouped, report_spec(grouped, {"rows": [], "columns": [
        "masking", "masking.input_budget"]}), tmp_path / "one_row", figures=False).markdown
    body = [line for line in every_setting_a_column.splitlines() if line.startswith("|")][2:]
    assert len(body) == 1 and body[0].count("|") == 2 * 2 * 2 + 1  # one row, 2 families x 2 budgets x 2 metrics


def test_table_tex_compiles_with_pdflatex_and_shows_the_table(grouped, tmp_path):
    for tool in ("pdflatex", "pdftoppm", "pdftotext"):
        assert shutil.which(tool), f"{tool} is missing: run `bash scripts/debian-packages.sh tex`"
    result = make_report(grouped, report_spec(grouped, {"columns": ["masking.input_budget"]}), tmp_path,
                         figures=False)
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs,graphicx}\n\\begin{document}\n"
                                      "\\input{table.tex}\n\\end{document}\n")
    text = _compiled(tmp_path)
    assert "budget=64" in text and "loss" in text and "1.741 ± 0.007" in text
    assert "input_budget=64 · loss · mean ↓" in result.markdown

    # The task table's labels, tasks over their metrics: RGB→depth spans its two metrics in the LaTeX header.
    metrics = [LOSS, MIOU, DELTA1, ABS_REL]
    result = make_report(grouped, report_spec(grouped, {"metrics": metrics}), tmp_path, figures=False)
    latex = (tmp_path / "table.tex").read_text()
    header = latex[latex.index(r"\toprule"):latex.index(r"\midrule")].splitlines()[1:]
    assert len(header) == 2  # task, then metric (nothing over the row keys)
    assert [c.strip() for c in header[0].removesuffix(r"\\").split("&")] == [
        r"\multicolumn{2}{c}{}", "loss", r"RGB$\to$semseg", r"\multicolumn{2}{c}{RGB$\to$depth}"]
    assert [c.strip() for c in header[1].removesuffix(r"\\").split("&")] == [
        "masking", r"input\_budget", r"mean $\downarrow$", r"mIoU $\uparrow$", r"$\delta$1 $\uparrow$",
        r"abs rel $\downarrow$"]
    text = _compiled(tmp_path)
    assert "RGB→semseg" in text and "RGB→depth" in text and "mIoU ↑" in text and "δ1 ↑" in text
    assert "abs rel ↓" in text
    header = next(line for line in result.markdown.splitlines() if line.startswith("|"))
    assert [c.strip() for c in header.split("|")[1:-1]] == [
        "masking", "input_budget", "loss · mean ↓", "RGB→semseg · mIoU ↑", "RGB→depth · δ1 ↑", "RGB→depth · abs rel ↓"]


def _compiled(folder: Path) -> str:
    """doc.tex in ``folder`` through pdflatex: the text of the page (which must be wider than 500 pixels)."""
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    subprocess.run(["pdftoppm", "-png", "-r", "110", "-singlefile", "doc.pdf", "doc"], cwd=folder, check=True)
    assert plt.imread(folder / "doc.png").shape[1] > 500
    return subprocess.run(["pdftotext", "-layout", "doc.pdf", "-"], cwd=folder, capture_output=True,
                          text=True).stdout


def test_a_second_report_of_unchanged_results_redraws_and_rewrites_nothing(grouped, tmp_path, monkeypatch):
    import ablate.figures

    out = tmp_path / "report"
    assert main(["report", str(grouped.path), "--out", str(out)]) == 0
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert {"table.md", "table.tex", "summary.csv", "report.json", "metrics.png", "metrics.pdf", "curves.png",
            "deltas.pdf"} <= set(files)
    store = {p: p.stat().st_mtime_ns for p in grouped.dir.rglob("*") if p.is_file()}
    drawn = []
    monkeypatch.setattr(ablate.figures, "draw_all", lambda *args: drawn.append(args) or [])
    assert main(["report", str(grouped.path), "--out", str(out)]) == 0
    assert not drawn
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == files  # not even touched
    assert {p: p.stat().st_mtime_ns for p in grouped.dir.rglob("*") if p.is_file()} == store  # studies/ neither

    monkeypatch.undo()  # drawn again from the same data (the record of what they were drawn from gone): same bytes
    (out / ".digests.json").unlink()
    assert main(["report", str(grouped.path), "--out", str(out)]) == 0
    again = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {name: data for name, (data, _) in files.items()} == again
    assert any((out / name).stat().st_mtime_ns != mtime for name, (_, mtime) in files.items()
               if name.endswith(".png"))  # they were drawn


def _per_seed(settings: dict[str, list], values: dict[str, list[float]]) -> pd.DataFrame:
    """Rows as ``make_report`` gives ``metrics_figure``: a configuration per combination of the settings' values
    (masking first), ``values[metric]``: the seeds' values of every configuration."""
    rows = []
    for combo in itertools.product(*settings.values()):
        config = dict(zip(settings, combo))
        label = " ".join(f"{k}={v}" for k, v in config.items())
        rows += [{"config": label, "label": label, **config, "metric": metric, "seed": seed,
                  "value": value + 0.01 * len(rows)} for metric, seeds in values.items()
                 for seed, value in enumerate(seeds)]
    frame = pd.DataFrame(rows)
    for key in ["label", *settings]:
        frame[key] = pd.Categorical(frame[key], list(dict.fromkeys(frame[key])))
    return frame


def test_metric_intervals_stay_in_the_metrics_range_and_the_figure_says_n():
    from ablate.figures import metrics_figure
    from ablate.stats import t_interval
    from model.tasks import metric_of

    values = {MIOU: [0.02, 0.9], DELTA1: [0.3, 0.99], LOSS: [0.05, 3.0]}  # unclipped, each interval leaves its range
    for metric, seeds in values.items():
        low, high = t_interval(np.array(seeds))
        assert low < metric_of(metric).low or high > metric_of(metric).high
    for settings in ({"masking": ["random", "dirichlet_4m", "block"]},  # a strip plot per configuration
                     {"masking": ["random", "dirichlet_4m"], "masking.input_budget": [64, 96]}):  # lines along budget
        per_seed = _per_seed(settings, values)
        figure = metrics_figure(per_seed, list(values), list(settings))
        text = [t.get_text() for t in figure.findobj(plt.Text)]
        assert any("n=2 seeds" in t for t in text), text
        for ax, metric in zip(figure.axes, values):
            spec = metric_of(metric)
            ys = [y for line in ax.lines for y in line.get_ydata()]  # means and error bars (beside a strip plot)
            ys += [y for band in ax.collections if isinstance(band, PolyCollection)  # bands (along a line)
                   for path in band.get_paths() for y in path.vertices[:, 1]]
            # drawn, clipped at the ends of the range (mIoU's and δ1's at 1; a loss has no upper end)
            assert min(ys) == spec.low and max(ys) == (spec.high if math.isfinite(spec.high) else max(ys)), metric
        legends = [[t.get_text() for t in legend.get_texts()] for legend in figure.legends]
        if len(settings) == 1:  # the x axis names each masking: no legend repeats it
            assert legends == []
            assert "dirichlet_4m" in [t.get_text() for t in figure.axes[0].get_xticklabels()]
        else:
            assert legends == [["random", "dirichlet_4m"]]
        plt.close(figure)


def _study_of(data_root, folder: Path, name: str, grid: dict, values, seeds=(0, 1), metrics=(LOSS, ACC)):
    """A study whose every run is recorded as finished with ``values(run) -> {metric: value}``."""
    path = write_study(folder, data_root, name, list(seeds), grid)
    study = yaml.safe_load(path.read_text())
    study["report"] = {"metrics": list(metrics)}
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    study = load_study(path)
    ledger = Ledger(study)
    parent = ledger.parent_id()
    for run in study.runs:
        record(ledger, parent, run, values(run))
    return study


def test_a_metric_equal_everywhere_and_too_few_seeds_are_said(data_root, tmp_path):
    loss = {("random", 0): 2.00, ("random", 1): 2.05, ("block", 0): 2.02, ("block", 1): 2.06}  # p = 0.2
    study = _study_of(data_root, tmp_path, "flat", {"masking": ["random", "block"]},
                      lambda run: {LOSS: loss[run.family, run.seed], ACC: 0.171})
    result = make_report(study, study.spec.report, tmp_path / "out", figures=False)
    assert "Note: eval/acc/mean is 0.171 in every run: it does not tell the configurations apart (none is marked " \
           "best)." in result.markdown
    assert "**0.171" not in result.markdown and "0.171†" not in result.markdown  # no best, no ties
    assert "Note: No difference from the baseline is significant at 0.05 after Holm correction over 1 tests with 2 " \
           "seeds at most: the largest effect seen would need about 4 seeds" in result.markdown
    assert "Note: eval/acc/mean is 0.171" in (tmp_path / "out" / "table.tex").read_text()


def test_a_store_written_with_the_old_metric_names_is_read_with_todays(data_root, tmp_path):
    old, new = "eval/rgb-_semseg/miou", "eval/rgb_to_semseg/miou"  # MLflow's rewrite of eval/rgb->semseg/miou
    study = _study_of(data_root, tmp_path, "old", {"masking": ["random", "block"]},
                      lambda run: {old: 0.3 + 0.1 * (run.family == "block") + 0.01 * run.seed}, metrics=[new])
    summary = pd.read_csv(make_report(study, study.spec.report, tmp_path / "out", figures=False).folder /
                          "summary.csv").set_index(["masking", "metric"])
    assert np.isclose(summary.loc[("block", new), "mean"], 0.405)
    assert all(r.metric(new) is not None for r in Ledger(study, create=False).records().values())


def test_a_preset_is_found_and_reported_by_its_name_and_a_store_without_the_masking_tag_still_reports(
        data_root, tmp_path, monkeypatch):
    import ablate.figures

    grid = {"masking": ["random", "dirichlet_4m"], "masking.input_budget": [64, 96]}
    study = _study_of(data_root, tmp_path, "presets", grid,
                      lambda run: {LOSS: 2.0 - 0.2 * (run.masking == "dirichlet_4m") + run.seed / 100, ACC: 0.5})
    ledger = Ledger(study, create=False)
    found = ledger.client.search_runs([ledger.experiment_id], "tags.masking = 'dirichlet_4m'")
    assert sorted(r.data.tags["run_key"] for r in found) == sorted(r.key for r in study.runs
                                                                   if r.masking == "dirichlet_4m")
    assert {r.data.tags["family"] for r in found} == {"dirichlet"}  # the config's masking.name
    for record_ in ledger.records().values():  # as code before the masking tag left them: family only
        ledger.client.delete_tag(record_.run_id, "masking")
    legends = []
    metrics_figure = ablate.figures.metrics_figure

    def remember_legend(*args):
        figure = metrics_figure(*args)
        legends.extend((legend.get_title().get_text(), [t.get_text() for t in legend.get_texts()])
                       for legend in figure.legends)
        return figure

    monkeypatch.setattr(ablate.figures, "metrics_figure", remember_legend)
    summary = pd.read_csv(make_report(study, study.spec.report, tmp_path / "out").folder / "summary.csv")
    chosen = summary[(summary["masking"] == "dirichlet_4m") & (summary["metric"] == LOSS)]
    assert len(chosen) == 2 and np.allclose(chosen["mean"], 1.805) and set(chosen["family"]) == {"dirichlet"}
    assert legends == [("masking", ["random", "dirichlet_4m"])]  # colours along the budget axis: the study's names


def test_the_masks_figure_has_a_row_per_configuration(data_root, tmp_path, monkeypatch):
    import ablate.figures

    study = _study_of(data_root, tmp_path, "alphas", {"masking.input_alphas.rgb": [0.5, 2.0]},
                      lambda run: {LOSS: 2.0 + run.seed, ACC: 0.5})
    picture = tmp_path / "mask_frequency.png"
    plt.imsave(picture, np.random.default_rng(0).random((60, 120)))
    ledger = Ledger(study)
    for record_ in ledger.records().values():
        ledger.client.log_artifact(record_.run_id, str(picture), "masks")
    drawn = {}
    figure = ablate.figures.mask_frequency_figure
    monkeypatch.setattr(ablate.figures, "mask_frequency_figure", lambda images: drawn.update(images) or figure(images))
    make_report(study, study.spec.report, tmp_path / "out")
    assert list(drawn) == ["masking.input_alphas.rgb=0.5", "masking.input_alphas.rgb=2.0"]  # both dirichlet


def test_the_report_goes_to_the_study_run_and_the_experiment_describes_the_study(known, tmp_path):
    result = make_report(known, known.spec.report, tmp_path / "out", figures=False)
    ledger = Ledger(known, create=False)
    logged = {a.path for a in ledger.client.list_artifacts(ledger.study_run(), "report")}
    assert logged == {f"report/{p.name}" for p in result.files}
    assert {"report/table.md", "report/table.tex", "report/summary.csv", "report/report.json"} <= logged
    tags = ledger.client.get_experiment(ledger.experiment_id).tags
    assert tags["mlflow.note.content"] == "Known values" and tags["study"] == "known"
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens it on its runs table


def test_a_moved_study_folder_is_named_and_not_written_to(known, tmp_path, capsys):
    from ablate.schema import StudyError

    moved = tmp_path / "moved" / "studies"
    shutil.copytree(known.path.parent, moved)
    study = load_study(moved / known.path.name)
    assert Ledger(study, create=False).records()  # still readable
    warning = capsys.readouterr().err
    assert f"warning: {study.dir / 'mlflow.db'} keeps its artifacts at {known.dir / 'artifacts'}" in warning
    assert "MLflow records artifact locations as absolute paths" in warning
    with pytest.raises(StudyError, match="the folder was moved or copied"):
        Ledger(study)
