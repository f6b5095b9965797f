"""A race's report: the race replayed from the store, each configuration's seeds and outcome in the table, the
race's decisions (not the largest mean over unequal seeds) in bold, the run-hours of the full grid, the race
figure; on a race run by the submitter on the local executor and on one whose results are planted."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from study_files import TINY, write_study
from test_report import record

import ablate.figures
from ablate.ledger import Ledger
from ablate.race import submit_race
from ablate.report import make_report
from ablate.study_file import load_study

LOSS, RGB = "train/loss", "train/loss/rgb"
# Lower is better. At look 1 (3 seeds) the race eliminates random (far worse) and block (worse than aligned
# on every seed), keeps aligned and dirichlet; at look 2 (4 seeds, the last) they are still not separated.
# block's mean over its 3 seeds (2.100) beats aligned's over 4 (2.125): means over unequal seeds would crown it.
PLANTED = {"random": [3.00, 3.12, 3.05], "block": [2.00, 2.11, 2.19], "aligned": [1.90, 2.00, 2.10, 2.50],
           "dirichlet": [1.95, 2.03, 2.10, 2.55]}


def rows_of(markdown: str) -> dict[str, list[str]]:
    """The Markdown table's body: first cell -> the cells."""
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in markdown.splitlines() if line.startswith("|")]
    return {row[0]: row for row in cells[2:]}


def test_a_raced_study_reports_the_elimination_the_winner_and_the_full_grid(data_root, tmp_path):
    """A learning rate far too small against a working one: eliminated at the first look, the other wins."""
    path = write_study(tmp_path, data_root, "race", base={
        **TINY, "data.root": str(data_root[0]), "train.steps": 12, "train.log_every": 4, "train.checkpoint_every": 12,
        "train.warmup_steps": 0}, variants={"slow": {"train.lr": 1e-7, "train.min_lr": 1e-8},
                                            "fast": {"train.lr": 1e-3}},
        race={"metric": LOSS, "min_seeds": 3, "max_seeds": 4})
    study = load_study(path)
    states, state = submit_race(study, wait=True, progress=False)
    assert state.status == "won" and sorted(states.values()) == ["done"] * 6  # 2 configurations x 3 seeds

    result = make_report(study, study.spec.report, tmp_path / "out")
    rows = rows_of(result.markdown)
    header = result.markdown.splitlines()[2]
    assert [c.strip() for c in header.split("|")[1:-1]] == ["variant", "race", "train/loss ↓"]
    assert re.fullmatch(r"3 seeds, eliminated at look 1 \(p=[\d.e-]+ < 0\.041\)", rows["slow"][1]), rows["slow"]
    assert rows["fast"][1] == "3 seeds, winner"
    assert rows["fast"][2].startswith("**") and "**" not in rows["slow"][2]
    assert "n=3/4" in rows["slow"][2] and "n=3/4" in rows["fast"][2]  # m = max_seeds
    hours, spent, full = re.search(r"6 finished runs, ([\d.]+) run-hours \(MLflow start to end\)\. Race: ([\d.]+) of "
                                   r"([\d.]+) run-hours of the full grid at 4 seeds \(75%; ", result.markdown).groups()
    assert hours == spent and float(spent) <= float(full)  # 6 of 8 runs: 75%
    assert "which configuration is best, not by how much the eliminated ones lose" in result.markdown
    assert (tmp_path / "out" / "race.png").stat().st_size > 10_000 and (tmp_path / "out" / "race.pdf").is_file()
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("variant")
    assert summary.loc["slow", ["race_seeds", "race_outcome", "race_look", "race_versus"]].tolist() == [
        3, "eliminated", 1, "variant=fast"]
    assert summary.loc["slow", "race_p"] < summary.loc["slow", "race_alpha"] < 0.05
    assert summary.loc["fast", "race_outcome"] == "winner" and np.isnan(summary.loc["fast", "race_look"])
    latex = (tmp_path / "out" / "table.tex").read_text()
    assert "3 seeds, eliminated at look 1 (p=" in latex and r"\textless{} 0.041)" in latex


@pytest.fixture
def planted(data_root, tmp_path):
    """A race over four masking families whose runs are recorded with PLANTED values (``record`` of the first
    seeds of each first), and a function recording the rest."""
    study = load_study(write_study(tmp_path, data_root, "planted", grid={"masking": list(PLANTED)},
                                   race={"metric": LOSS, "min_seeds": 3, "max_seeds": 4},
                                   report={"metrics": [LOSS, RGB]}))
    ledger = Ledger(study)
    parent = ledger.parent_id()

    def record_seeds(seeds: range) -> None:
        for run in study.runs:
            values = PLANTED[run.masking]
            if run.seed in seeds and run.seed < len(values):  # block's rgb loss is the lowest: best there
                record(ledger, parent, run, {LOSS: values[run.seed], RGB: 0.5 + 0.1 * (run.masking != "block")
                                             + run.seed / 100})

    record_seeds(range(3))
    return study, record_seeds


def test_bold_on_the_race_metric_is_the_race_s_not_the_best_mean_over_fewer_seeds(planted, tmp_path, monkeypatch):
    study, record_seeds = planted
    result = make_report(study, study.spec.report, tmp_path / "look1", figures=False)
    rows = rows_of(result.markdown)  # masking | race | loss | rgb loss; waiting for look 2
    assert rows["random"][1].startswith("3 seeds, eliminated at look 1 (p=")
    assert rows["block"][1].startswith("3 seeds, eliminated at look 1 (p=")
    assert rows["aligned"][1] == "4 seeds, racing" and rows["dirichlet"][1] == "4 seeds, racing"
    assert rows["aligned"][2].startswith("**2.000") and rows["dirichlet"][2].startswith("2.027 ± 0.075†")

    record_seeds(range(3, 4))
    drawn = []
    race_figure = ablate.figures.race_figure
    monkeypatch.setattr(ablate.figures, "race_figure", lambda race: drawn.append(race) or race_figure(race))
    result = make_report(study, study.spec.report, tmp_path / "out")
    rows = rows_of(result.markdown)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index(["masking", "metric"])
    assert np.isclose(summary.loc[("block", LOSS), "mean"], 2.1) and np.isclose(summary.loc[("aligned", LOSS),
                                                                                              "mean"], 2.125)
    # The race's leader among those left at max, not block's better mean over its 3 seeds.
    assert rows["aligned"][1] == "4 seeds, left at max" and rows["dirichlet"][1] == "4 seeds, left at max"
    assert rows["aligned"][2].startswith("**2.125 ± 0.263**") and "†" not in rows["aligned"][2]
    assert rows["dirichlet"][2].startswith("2.157 ± 0.269†")
    assert "**" not in rows["block"][2] and "†" not in rows["block"][2]
    assert summary.loc[("aligned", LOSS), "best"] and not summary.loc[("block", LOSS), "best"]
    assert np.isnan(summary.loc[("block", LOSS), "p_best"])  # no mean-based test against a best there
    # Other metrics as without a race: block's rgb loss is the lowest mean, and bold.
    assert rows["block"][3].startswith("**0.510") and summary.loc[("block", RGB), "best"]
    assert "eliminated configurations have fewer seeds in every column" in result.markdown

    (race,) = drawn
    points = race.points.groupby("name")["look"].agg(["min", "max", "size"])
    assert points.loc["masking=block: eliminated at look 1 (p=0.013 < 0.041)"].tolist() == [1, 1, 3]
    assert points.loc["masking=aligned: left at max"].tolist() == [1, 2, 3 + 4]
    gone = race.points[race.points["eliminated"]]
    assert set(gone["name"].str.split(":").str[0]) == {"masking=random", "masking=block"} and set(gone["look"]) == {1}
    assert not race.points["winner"].any()  # left at max: no winner
    assert "Race: ended at max_seeds with several configurations left (look 2 of 2)" in race.title
    assert (tmp_path / "out" / "race.png").is_file()
