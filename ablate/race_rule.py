"""The racing rule: which configurations stay in a race, decided from recorded results alone.

A race runs every configuration on the same seeds, in rounds: the first ``min_seeds`` seeds, then ``every``
more per round, up to ``max_seeds``. After each round (a *look*, on complete blocks: every configuration still
racing has ended its runs of the seeds so far) the configurations still racing are compared pairwise on the
seeds they share (paired t-test on the per-seed differences, as the report compares); a configuration
significantly worse than another by more than ``margin`` is eliminated and gets no more seeds. The race ends
when one configuration is left (it wins), when every other one is shown within ``margin`` of the best (a tie),
or at the last look.

The error rate holds over the whole race, not per look:

* **Across looks: alpha spending.** The looks are fixed in advance (the seed counts of ``looks``), and look k
  tests at the increment ``spent(t_k) - spent(t_{k-1})`` of a Lan-DeMets spending function of the information
  fraction t_k = seeds at look k / ``max_seeds``. The increments sum to ``alpha``, so by the union bound the
  chance of any wrongful elimination over all looks is at most ``alpha``, however the looks correlate (it is
  conservative: a boundary using that correlation would be a little less strict, but for t-tests on a handful
  of seeds with a correction inside each look no exact one is at hand). ``pocock`` spends evenly-ish
  (alpha ln(1 + (e - 1) t)), so a clearly worse configuration goes at the first look; ``obrien_fleming``
  spends almost nothing early (2 - 2 Phi(z_{alpha/2} / sqrt t)) and keeps most for the last look.
* **Within a look: Holm over every pair** of configurations still racing. Testing each against the current best
  alone, with Holm over m - 1 tests, would under-correct: the best is picked from the same data, so under the
  null the best-versus-worst difference is a range, not one difference (with many seeds, one look at 0.05
  would eliminate an equal configuration 6.5% of the time with 3 configurations, 9.2% with 5; over all pairs,
  4.4% and 4.1%: the studentized range's tail).
  A wrongful elimination needs a true best to be declared worse than another, which is a false rejection in the
  family of all pairs, whose family-wise error Holm bounds.

The margin (a practical-equivalence bound, >= 0, in the metric's units): an elimination needs the difference
to exceed it significantly (t = (|mean difference| - margin) / se, two-sided p), and a configuration counts
as tied with the best when a two one-sided tests procedure (TOST) at the look's level puts their difference
within the margin. The tie needs every remaining configuration so shown (an intersection-union test: no
correction needed).

Everything here is a function of its arguments, so a resubmitted race replays the same decisions from the
results its store holds (``replay``). Values are oriented by the metric's direction, NaN is a missing value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

import numpy as np
from scipy import stats

from ablate.schema import RaceSpec, RaceTest, Spending
from ablate.stats import adjust
from model.tasks import Direction

TESTS: dict[RaceTest, str] = {
    "paired": "paired t-test of each pair over the seeds both have (its own variance: holds when the configurations' "
              "seed noise differs)",
    "pooled": "paired t-test with one residual variance pooled over the configurations racing (two-way ANOVA of "
              "configuration x seed on complete seeds): more degrees of freedom at few seeds, but it assumes every "
              "configuration is as noisy as the others"}
SPENDING: dict[Spending, str] = {"pocock": "Pocock-type, alpha ln(1 + (e - 1) t)",
                            "obrien_fleming": "O'Brien-Fleming-type, 2 - 2 Phi(z_(alpha/2) / sqrt t)"}
Status = Literal["racing", "won", "tied", "ended"]  # ended: the last look left several configurations


@dataclass(frozen=True)
class RaceRule:
    """The parts of a study's ``race:`` section the decisions depend on; ``RaceSpec`` (``ablate/schema.py``) owns
    their defaults and what is allowed, ``of`` makes one from it."""

    direction: Direction
    min_seeds: int
    max_seeds: int
    every: int
    alpha: float
    spending: Spending
    margin: float
    test: RaceTest

    @classmethod
    def of(cls, race: RaceSpec, direction: Direction) -> RaceRule:
        return cls(direction, race.min_seeds, race.max_seeds, race.every, race.alpha, race.spending, race.margin,
                   race.test)

    def looks(self) -> list[Look]:
        """The fixed schedule: seed counts min, min + every, ..., max (always the last), each with its level."""
        counts = list(range(self.min_seeds, self.max_seeds, self.every)) + [self.max_seeds]
        spent = [0.0] + [spent_alpha(n / self.max_seeds, self.alpha, self.spending) for n in counts]
        return [Look(i + 1, n, spent[i + 1] - spent[i]) for i, n in enumerate(counts)]


@dataclass(frozen=True)
class Look:
    round: int  # 1-based
    seeds: int  # every configuration still racing has this many seeds at this look
    alpha: float  # this look's share of the race's alpha


def spent_alpha(t: float, alpha: float, spending: Spending) -> float:
    """Alpha spent by information fraction ``t`` in (0, 1] (Lan & DeMets 1983); ``alpha`` at t = 1."""
    if spending == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    return float(2 - 2 * stats.norm.cdf(stats.norm.isf(alpha / 2) / math.sqrt(t)))


@dataclass(frozen=True)
class Elimination:
    round: int
    seeds: int  # seeds it had when eliminated
    versus: str  # the configuration it was found worse than (the smallest adjusted p)
    p: float  # Holm-adjusted p of that pair
    alpha: float  # the look's level the p was compared with


@dataclass
class LookResult:
    """What one look saw: the mean of every configuration still racing over the look's seeds, its best."""

    look: Look
    means: dict[str, float]
    best: str | None
    eliminated: list[str]


@dataclass
class RaceState:
    """Where a race stands after replaying every look its recorded results allow."""

    rule: RaceRule
    seeds: list[int]  # the race's seeds in order (the study's ``seeds``)
    configs: list[str]
    status: Status = "racing"
    round: int = 1  # the look it waits for (racing), or its last look (ended)
    eliminated: dict[str, Elimination] = field(default_factory=dict)
    tied: list[str] = field(default_factory=list)  # with the best, when the race ended in a tie
    history: list[LookResult] = field(default_factory=list)

    @property
    def racing(self) -> list[str]:
        return [c for c in self.configs if c not in self.eliminated]

    @property
    def winner(self) -> str | None:
        return self.racing[0] if self.status == "won" else None

    @property
    def leader(self) -> str | None:
        """The best configuration at the last look taken (the winner, once there is one)."""
        return self.history[-1].best if self.history else None

    def seeds_of(self, config: str) -> list[int]:
        """The seeds the race runs ``config`` on: those of its current round while racing, of the round it
        was eliminated at otherwise; an ended race adds none."""
        if config in self.eliminated:
            return self.seeds[:self.eliminated[config].seeds]
        looks = self.rule.looks()
        return self.seeds[:looks[self.round - 1].seeds]

    def wanted(self) -> dict[str, list[int]]:
        """Config -> the seeds the race needs of it now (every one the race has used or is waiting for)."""
        return {c: self.seeds_of(c) for c in self.configs}


def replay(rule: RaceRule, seeds: Sequence[int], configs: Sequence[str],
           values: Mapping[str, Mapping[int, float]], ended: set[tuple[str, int]]) -> RaceState:
    """Take every look the results allow, in order, and return where the race stands.

    seeds: the race's seeds in order (at least ``rule.max_seeds``); configs: in the study's order;
    values: config -> seed -> the metric of each finished run (NaN: logged NaN); ended: the (config, seed)
    pairs whose runs have ended, finished or failed for good. A look is taken once every configuration still
    racing has ended its runs of the look's seeds; values of later seeds never change an earlier decision."""
    state = RaceState(rule, list(seeds), list(configs))
    for look in rule.looks():
        state.round = look.round
        used = state.seeds[:look.seeds]
        if any((c, s) not in ended for c in state.racing for s in used):
            return state
        racing = state.racing
        table = np.array([[values.get(c, {}).get(s, np.nan) for s in used] for c in racing], dtype=float)
        if rule.direction == "lower":
            table = -table  # higher is better from here on
        result = decide(table, look.alpha, rule.margin, rule.test)
        means = dict(zip(racing, _nanmean_rows(table) * (-1 if rule.direction == "lower" else 1)))
        best = racing[result.best] if result.best is not None else None
        for i, (j, p) in result.eliminated.items():
            state.eliminated[racing[i]] = Elimination(look.round, look.seeds, racing[j], p, look.alpha)
        state.history.append(LookResult(look, means, best, [racing[i] for i in result.eliminated]))
        if len(state.racing) == 1:
            state.status = "won"
            return state
        if result.tied:
            state.status = "tied"
            state.tied = [c for c in state.racing if c != best]
            return state
    state.status = "ended"
    return state


@dataclass
class Decision:
    best: int | None  # row with the highest mean (None: no row has a value)
    eliminated: dict[int, tuple[int, float]]  # row -> (the row it is worse than, adjusted p)
    tied: bool  # every row left is within the margin of the best (TOST at the look's level)


def decide(table: np.ndarray, alpha: float, margin: float = 0.0, test: RaceTest = "paired") -> Decision:
    """One look. table: [configs, seeds], higher is better, NaN missing; seeds are shared (column j is one seed
    for every row). Every pair is tested (``TESTS[test]``), Holm across the pairs at ``alpha``; the worse of a
    rejected pair is eliminated, against the partner of its smallest adjusted p."""
    rows = table.shape[0]
    means = _nanmean_rows(table)
    best = int(np.nanargmax(means)) if np.isfinite(means).any() else None
    pairs = list(combinations(range(rows), 2))
    if not pairs:
        return Decision(best, {}, False)
    i, j = np.array(pairs).T
    diff = table[i] - table[j]  # [pairs, seeds]
    p, mean_diff = (pair_p if test == "paired" else pooled_p)(diff, margin, table)
    adjusted = adjust(p, "holm")
    eliminated: dict[int, tuple[int, float]] = {}
    for k in np.argsort(adjusted, kind="stable"):
        if not adjusted[k] < alpha:
            break
        worse, better = (j[k], i[k]) if mean_diff[k] > 0 else (i[k], j[k])
        eliminated.setdefault(int(worse), (int(better), float(adjusted[k])))
    left = [r for r in range(rows) if r not in eliminated]
    tied = margin > 0 and best in left and len(left) > 1 and all(
        equivalent(table[best] - table[r], margin, alpha) for r in left if r != best)
    return Decision(best, eliminated, bool(tied))


def pair_p(diff: np.ndarray, margin: float, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """diff: [pairs, seeds] paired differences (NaN: missing) -> two-sided p that |mean| exceeds ``margin``
    (NaN with fewer than 2 values), and the mean difference. With no spread, p is 0 or 1."""
    n = np.isfinite(diff).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows and one-value rows: NaN, as wanted
        mean = np.nanmean(diff, axis=1)
        p = _two_sided(np.abs(mean) - margin, np.nanstd(diff, axis=1, ddof=1) / np.sqrt(n), np.maximum(n - 1, 1))
    p[n < 2] = np.nan
    return p, mean


def pooled_p(diff: np.ndarray, margin: float, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pair_p`` with the residual variance of the two-way layout ``table`` [configs, seeds] on the seeds every
    configuration has: se = sqrt(2 MSE / n) with (configs - 1)(n - 1) degrees of freedom for every pair."""
    complete = table[:, np.isfinite(table).all(axis=0)]
    rows, n = complete.shape
    mean = diff[:, np.isfinite(table).all(axis=0)].mean(axis=1)
    if n < 2:
        return np.full(len(diff), np.nan), mean
    residual = complete - complete.mean(axis=1, keepdims=True) - complete.mean(axis=0, keepdims=True) + complete.mean()
    dof = (rows - 1) * (n - 1)
    se = np.full(len(diff), math.sqrt(2 * (residual**2).sum() / dof / n))
    return _two_sided(np.abs(mean) - margin, se, dof), mean


def _two_sided(excess: np.ndarray, se: np.ndarray, dof: np.ndarray | int) -> np.ndarray:
    """2 P(T > excess / se), capped at 1; with no spread (se 0), 0 when excess > 0 and 1 otherwise."""
    spread = se > 0
    t = np.where(spread, excess / np.where(spread, se, 1), np.where(excess > 0, np.inf, -np.inf))
    return np.minimum(1.0, 2 * stats.t.sf(t, dof))


def equivalent(diff: np.ndarray, margin: float, alpha: float) -> bool:
    """TOST: both one-sided tests reject |mean difference| >= margin at ``alpha`` (needs 2 values)."""
    diff = diff[np.isfinite(diff)]
    if len(diff) < 2:
        return False
    mean, se = diff.mean(), diff.std(ddof=1) / math.sqrt(len(diff))
    if se == 0:
        return abs(mean) < margin
    dof = len(diff) - 1
    return bool(max(stats.t.sf((mean + margin) / se, dof), stats.t.sf((margin - mean) / se, dof)) < alpha)


def _nanmean_rows(table: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(table, axis=1) if table.size else np.full(len(table), np.nan)
