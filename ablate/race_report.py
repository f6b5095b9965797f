"""A race's part of a report (``ablate/race.py`` runs the race, ``ablate/race_rule.py`` decides it): the race
replayed from the report's snapshot, each configuration's outcome, the race's own best on its metric, what the
race cost against the full grid, and the points of its figure.

What a race's table may claim: which configuration is best, not by how much the eliminated ones lose. An
eliminated configuration stopped at the look where it looked worst, on fewer seeds than the others: its mean is
biased against it, its difference from the others overstated and its interval too short. Means over different
seed sets are not comparable either (an eliminated configuration's mean over 3 seeds can beat the winner's over
4), so on the race's metric the bold and the ties are the race's decisions, not the largest mean's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ablate.race import STATUS_WORDS, labels_of, replay_study, test_words
from ablate.race_rule import RaceState
from ablate.study import Study
from ablate.table import Markup, race_words

if TYPE_CHECKING:
    from ablate.figures import RaceFigure

COLUMNS = ["race_seeds", "race_outcome", "race_look", "race_p", "race_alpha", "race_versus"]  # summary.csv's
SURVIVORS = {"won": "winner", "tied": "tied", "racing": "racing", "ended": "left at max"}  # by the race's status


@dataclass
class RaceReport:
    study: Study
    state: RaceState
    values: dict[str, dict[int, float]]  # config -> seed -> the race metric of each finished run (NaN: none)
    outcomes: pd.DataFrame  # ``outcomes``

    @property
    def metric(self) -> str:
        return self.study.spec.race.metric

    def mark(self, long: pd.DataFrame) -> pd.DataFrame:
        """The report's long table with the outcome columns, and on the race's metric best and tied as the race
        decided: bold its winner, or, without one, its leader at the last look; tied the others still in the
        race (tied, racing, left at max). The tests against the best mean are dropped there: means over
        different seeds are not comparable."""
        long = long.join(self.outcomes, on="config")
        rows = long["metric"] == self.metric
        leader = self.state.leader
        long.loc[rows, "best"] = long.loc[rows, "config"] == leader
        long.loc[rows, "tied"] = (leader is not None) & long.loc[rows, "config"].isin(self.state.racing) & \
            (long.loc[rows, "config"] != leader) & long.loc[rows, "mean"].notna()
        long.loc[rows, ["p_best", "p_best_adj"]] = np.nan
        return long

    def legend(self, markup: Markup) -> str:
        """What the race column and the race's marks say, and what the table may claim."""
        return markup.escape(
            f"Race on {self.metric} ({test_words(self.state.rule)}): configurations ran in rounds of seeds, and one "
            "found significantly worse than another at a look got no more; the race column gives each "
            "configuration's seeds and outcome (p: Holm-adjusted, below the look's share of alpha). "
            f"On {self.metric} bold is the race's winner (or, without one, its leader at the last look) and ") + \
            markup.tie + markup.escape(
            " marks the others it left undecided; eliminated configurations have fewer seeds in every column. "
            "The table says which configuration is best, not by how much the eliminated ones lose: their means "
            "rest on fewer seeds and stopped where they looked worst, so they are biased and their intervals too "
            "short.")

    def figure(self) -> RaceFigure:
        """The race figure's points: one row per look, configuration racing at it and seed the look used
        (finished), and its title: where the race stands, its rule."""
        from ablate.figures import RaceFigure  # matplotlib and seaborn only where figures are drawn

        state, rule = self.state, self.state.rule
        labels = labels_of(self.study)
        names = {c: f"{labels[c]}: {race_words(row)}" for c, row in self.outcomes.iterrows()}
        rows = [(names[c], h.look.round, h.look.seeds, self.values[c][s], c == state.winner, c in h.eliminated)
                for h in state.history for c in h.means for s in state.seeds[:h.look.seeds]
                if s in self.values.get(c, {})]
        title = (f"Race: {STATUS_WORDS[state.status]} (look {state.round} of {len(rule.looks())})\n"
                 f"{test_words(rule)}" + (f", margin {rule.margin:g}" if rule.margin else ""))
        return RaceFigure(pd.DataFrame(rows, columns=["name", "look", "seeds", "value", "winner", "eliminated"]),
                          self.metric, title)


def replay(study: Study, runs: pd.DataFrame, metrics: pd.DataFrame) -> RaceReport:
    """The race as the snapshot's runs (``runs``: with the plan's config and seed, and their status) and final
    metrics decide it.

    A run has ended once FINISHED or FAILED: the snapshot holds no retries tag, so a failed run counts as ended
    even where the submitter will retry it (``race.race_state`` waits for its retries). Once the race is over,
    these are the submitter's decisions."""
    finished = runs[runs["status"] == "FINISHED"]
    metric = metrics[metrics["metric"] == study.spec.race.metric].set_index("run_id")["value"]
    values: dict[str, dict[int, float]] = {}
    for config, seed, value in zip(finished["config"], finished["seed"], finished["run_id"].map(metric)):
        values.setdefault(config, {})[int(seed)] = float(value)
    ended = runs[runs["status"].isin(["FINISHED", "FAILED"])]
    state = replay_study(study, values, set(zip(ended["config"], ended["seed"].astype(int))))
    return RaceReport(study, state, values, outcomes(study, state))


def outcomes(study: Study, state: RaceState) -> pd.DataFrame:
    """One row per configuration (index: config hash): the seeds the race gave it, its outcome (winner,
    eliminated, tied, racing, left at max), and for an eliminated one the look, the Holm-adjusted p, the
    look's level and the configuration it was found worse than."""
    labels = labels_of(study)
    rows = {}
    for config in state.configs:
        gone = state.eliminated.get(config)
        rows[config] = {"race_seeds": len(state.seeds_of(config)),
                        "race_outcome": "eliminated" if gone else SURVIVORS[state.status],
                        "race_look": gone.round if gone else None, "race_p": gone.p if gone else np.nan,
                        "race_alpha": gone.alpha if gone else np.nan,
                        "race_versus": labels[gone.versus] if gone else None}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS)
    table["race_look"] = table["race_look"].astype("Int64")
    return table


def cost(study: Study, hours: float, finished: int) -> str:
    """The race's run-hours against those of the full grid at ``max_seeds`` (estimated: configurations x
    max_seeds x the mean run-hours of the finished runs)."""
    if not finished:
        return ""
    seeds = study.spec.race.max_seeds
    full = len(labels_of(study)) * seeds * hours / finished
    share = f"{hours / full:.0%}; " if full > 0 else ""
    return (f" Race: {hours:.2f} of {full:.2f} run-hours of the full grid at {seeds} seeds ({share}the full grid "
            "estimated at the mean finished run).")
