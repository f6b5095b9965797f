"""The racing rule on simulated studies with known truth: does it pick the best, at what share of the full grid,
and how often does it eliminate something under the null?

Each simulated study draws a value for every (configuration, seed) of the full grid and replays the race on it
through the rule's own code (``ablate.race_rule.replay``, every run ended): the race takes its looks at
min_seeds, min_seeds + every, ..., max_seeds seeds (``RaceRule``'s defaults: 3 to 10, one seed per round,
alpha 0.05, margin 0) and sees only the seeds it reached. Higher is better. A value is

    value[config, seed] = effect[config] + sd[config] * (sqrt(rho) shared[seed] + sqrt(1 - rho) own[config, seed])

with standard normal noises; rho is the share of a run's variance the seed itself causes (shared by every
configuration run with it, as in ``bench_stats.py``). The default rho 0 (seeds share nothing) is the worst case
for the paired tests: a difference of two configurations with sd 1 has sd sqrt(2).

Effect sizes are in units of one run's seed sd. The planted rows (one best, the others all worse by delta, in
2 to 6 sd) bracket the quickstart's separations: on semseg mIoU dirichlet_4m is ahead of random by 3.3 of
random's seed sds and of block by 9.4 of block's. At rho 0 a delta of d sd is d / sqrt(2) sd of the paired
differences, a mean t of d sqrt(n / 2) over n seeds; the first look (3 seeds, Pocock's 0.021 shared by 3 pairs
with Holm) needs t 12 of the paired test (2 degrees of freedom) and 5.1 of the pooled one (4), so d from 2 (no
first-look elimination, a chance at 10 seeds) to 6 (often at the first look with the pooled test). The
quickstart row uses the README's measured means and seed sds (semseg mIoU, 2 seeds each): dirichlet_4m 0.397
(sd 0.006) is the true best, random 0.258 (0.042) and block 0.256 (0.015) are nearly equal. The null rows
(A/A) have equal means: 3 and 5 configurations of sd 1, and 3 with the quickstart's unequal sds, where the
pooled test's one variance is wrong.

Rules: the race with the paired or the pooled test and the Pocock- or O'Brien-Fleming-type spending, and the
naive rule (``NaiveRule``: the same looks and Holm within a look, but every look at the full alpha), all on the
same simulated values per scenario.

Columns: picks the true best (the race's pick: its winner, or at its last look the leader among those still
racing; a tie picks none), declared a sole winner, true best eliminated (a wrongful elimination), under the null
studies with any elimination (every one is wrongful; a declared winner implies one), runs as a share of the
full grid (configurations x max_seeds) and seeds at the last look, both means over studies. A share from n
studies has a 95% binomial half-width of at most 1.96 sqrt(0.25 / n) (0.022 at n 2000; 0.010 at 0.05 or 0.95).

Run: .venv/bin/python benchmarks/bench_race.py [--studies 2000] [--rho 0]
(about 4 minutes on one core at 2000 studies: a replayed race takes 1 to 1.5 ms, a look of ``decide`` 0.15 ms)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from tqdm import tqdm

from ablate.race_rule import SPENDING, TESTS, Look, RaceRule, RaceState, replay
from ablate.schema import RaceSpec

# The README's quickstart table, semseg mIoU (mean, sd over 2 seeds): dirichlet_4m, random, block.
QUICKSTART_MEAN = (0.397, 0.258, 0.256)
QUICKSTART_SD = (0.006, 0.042, 0.015)
METRIC = "eval/rgb_to_semseg/miou"  # what the simulated studies race on (its name only: values are drawn here)


@dataclass(frozen=True)
class NaiveRule(RaceRule):
    """The naive rule, for comparison only: the race's looks, each tested at the full alpha (no spending)."""

    def looks(self) -> list[Look]:
        return [replace(look, alpha=self.alpha) for look in super().looks()]


@dataclass(frozen=True)
class Scenario:
    name: str
    effect: tuple[float, ...]  # true mean per configuration, higher is better
    sd: tuple[float, ...]  # of a configuration's values over seeds
    rho: float = 0.0

    @property
    def best(self) -> int | None:
        """The true best configuration; None under the null (all means equal)."""
        return int(np.argmax(self.effect)) if len(set(self.effect)) > 1 else None

    def values(self, rng: np.random.Generator, studies: int, seeds: int) -> np.ndarray:
        """-> [studies, configs, seeds]"""
        shared = rng.normal(size=(studies, 1, seeds))
        own = rng.normal(size=(studies, len(self.effect), seeds))
        noise = np.sqrt(self.rho) * shared + np.sqrt(1 - self.rho) * own
        return np.array(self.effect)[:, None] + np.array(self.sd)[:, None] * noise


def planted(configs: int, delta: float) -> Scenario:
    return Scenario(f"planted, {configs} configs, {delta:g} sd", (0.0,) + (-delta,) * (configs - 1), (1.0,) * configs)


SCENARIOS = [
    *(planted(configs, delta) for configs in (3, 5) for delta in (2, 3, 4, 5, 6)),
    Scenario("quickstart semseg mIoU", QUICKSTART_MEAN, QUICKSTART_SD),
    Scenario("null, 3 configs", (0.0,) * 3, (1.0,) * 3),
    Scenario("null, 5 configs", (0.0,) * 5, (1.0,) * 5),
    Scenario("null, 3 configs, quickstart sds", (0.0,) * 3, QUICKSTART_SD),
]
RULES = {f"{test}, {spending}": RaceRule.of(RaceSpec.model_construct(metric=METRIC, spending=spending, test=test),
                                            "higher") for test in TESTS for spending in SPENDING}
RULES |= {f"{test}, naive": NaiveRule.of(RaceSpec.model_construct(metric=METRIC, test=test), "higher")
          for test in TESTS}


def outcome(state: RaceState, best: str | None) -> dict[str, float]:
    """One replayed race -> its row of the table (NaN where the column does not apply)."""
    pick = state.winner if state.status == "won" else state.leader if state.status == "ended" else None
    runs = sum(len(seeds) for seeds in state.wanted().values()) / (len(state.configs) * state.rule.max_seeds)
    return {"picks the true best": float(pick == best) if best is not None else np.nan,
            "sole winner": float(state.status == "won"),
            "true best eliminated": float(best in state.eliminated) if best is not None else np.nan,
            "any elimination (null)": float(bool(state.eliminated)) if best is None else np.nan,
            "runs / full grid": runs, "seeds at the end": state.history[-1].look.seeds}


def rates(values: np.ndarray, rule: RaceRule, best: int | None) -> dict[str, float]:
    """values: [studies, configs, seeds] -> mean of each column over the studies."""
    configs = [str(c) for c in range(values.shape[1])]
    seeds = list(range(values.shape[2]))
    ended = {(c, s) for c in configs for s in seeds}
    rows = [outcome(replay(rule, seeds, configs, {c: dict(zip(seeds, v)) for c, v in zip(configs, study)}, ended),
                    None if best is None else configs[best]) for study in values]
    return pd.DataFrame(rows).mean().to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=2000,
                    help="simulated studies per scenario (each rule replays the same ones)")
    ap.add_argument("--rho", type=float, default=0.0, help="share of a run's variance its seed causes")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    seeds = max(rule.max_seeds for rule in RULES.values())
    results, replays, start = {}, 0, time.perf_counter()
    for s in tqdm(SCENARIOS, desc="scenarios"):
        s = replace(s, rho=args.rho)
        values = s.values(rng, args.studies, seeds)
        for name, rule in RULES.items():
            results[s.name, name] = rates(values, rule, s.best)
            replays += args.studies
    seconds = time.perf_counter() - start
    for name, rule in RULES.items():
        print(f"{name}: alpha per look " + ", ".join(f"{look.seeds}: {look.alpha:.4f}" for look in rule.looks()))
    print(f"\n{args.studies} simulated studies per scenario, rho {args.rho:g}; {replays} replays in {seconds:.0f} s "
          f"({seconds / replays * 1e3:.2f} ms per replayed race, value generation included)\n")
    table = pd.DataFrame(results).T.rename_axis(["scenario", "rule"]).reset_index()
    table = table.astype(object).where(table.notna(), None)  # blank, not nan, where a column does not apply
    print(table.to_markdown(index=False, floatfmt=".3f", missingval=""))


if __name__ == "__main__":
    main()
