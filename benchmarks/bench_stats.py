"""Statistical honesty of the report's tests: how often a planted effect is flagged, and a null one.

Each simulated study is what `ablate report` compares, through the report's own code (``ablate.stats``
``aggregate`` and ``compare``): a baseline and some configurations, 5 seeds each, every cell tested against
the baseline and the tests corrected together. One configuration has a true effect on every metric (the
planted cells); the others have none (the null cells). A per-seed value is

    value = effect + sqrt(rho) * seed_noise[seed, metric] + sqrt(1 - rho) * run_noise[config, seed, metric]

with unit variance: "1 sd" is one standard deviation of a configuration's values over seeds, and rho is
the share of that variation the seed itself causes (initialization, data order, evaluation batches:
shared by every configuration run with that seed). The paired test removes the shared part: a paired
difference has sd sqrt(2 (1 - rho)), so a 1-sd effect is 1 / sqrt(2 (1 - rho)) sd of the differences
(0.71 at rho 0, 1.0 at rho 0.5, 1.58 at rho 0.8, 2.24 at rho 0.9). "Welch" runs the configurations on
different seeds. A planted cell counts as flagged when significant after correction with the right sign.

Run: .venv/bin/python benchmarks/bench_stats.py [--studies 500]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from ablate.stats import aggregate, compare

SEEDS = 5


@dataclass(frozen=True)
class Scenario:
    name: str
    effect: float  # in sd of a configuration's values over seeds
    rho: float
    configs: int = 2  # besides the baseline; the first carries the effect
    metrics: int = 1
    paired: bool = True
    correction: str = "holm"


def study(rng: np.random.Generator, s: Scenario) -> pd.DataFrame:
    """One simulated study's values: config, seed, metric, value (config 0 is the baseline)."""
    configs = s.configs + 1
    shared = rng.normal(size=(1 if s.paired else configs, SEEDS, s.metrics))
    own = rng.normal(size=(configs, SEEDS, s.metrics))
    value = np.sqrt(s.rho) * shared + np.sqrt(1 - s.rho) * own  # [config, seed, metric]
    value[1] += s.effect
    config, seed, metric = np.meshgrid(np.arange(configs), np.arange(SEEDS), np.arange(s.metrics), indexing="ij")
    return pd.DataFrame({"config": config.ravel().astype(str), "metric": [f"eval/loss/{m}" for m in metric.ravel()],
                         "seed": (seed if s.paired else config * SEEDS + seed).ravel(), "value": value.ravel()})


def rates(rng: np.random.Generator, s: Scenario, studies: int) -> dict[str, float]:
    configs = [str(c) for c in range(s.configs + 1)]
    metrics = [f"eval/loss/{m}" for m in range(s.metrics)]
    planted, null, any_null = [], [], []
    for _ in range(studies):
        values = study(rng, s)
        summary = aggregate(values, pd.Series(SEEDS, index=configs), metrics)
        result = compare(values, summary, dict.fromkeys(configs, "0"), dict.fromkeys(metrics, "lower"),
                         s.correction).drop(index="0", level="config")
        effect = result.index.get_level_values("config") == "1"
        if s.effect:
            hit = result["significant"] & (np.sign(result["delta"]) == np.sign(s.effect))
            planted.append(np.stack([hit[effect], result["p"][effect] < 0.05], 1))
        cells = result["significant"][~effect if s.effect else slice(None)]
        null.append(cells.to_numpy())
        any_null.append(cells.any())
    out = {"tests": (s.configs * s.metrics), "null cells flagged": np.concatenate(null).mean(),
           "studies with a null flag": np.mean(any_null)}
    if s.effect:
        hits = np.concatenate(planted)
        out |= {"planted flagged": hits[:, 0].mean(), "planted p<0.05 uncorrected": hits[:, 1].mean()}
    return out


SCENARIOS = [
    Scenario("1 sd, rho 0 (seeds share nothing)", 1.0, 0.0),
    Scenario("1 sd, rho 0.5 (= 1 sd of the paired differences)", 1.0, 0.5),
    Scenario("1 sd, rho 0.8", 1.0, 0.8),
    Scenario("1 sd, rho 0.9", 1.0, 0.9),
    Scenario("1 sd, rho 0.8, Welch (seeds not shared)", 1.0, 0.8, paired=False),
    Scenario("1 sd, rho 0.8, 3 configs x 2 metrics", 1.0, 0.8, configs=3, metrics=2),
    Scenario("1 sd, rho 0.9, 3 configs x 2 metrics", 1.0, 0.9, configs=3, metrics=2),
    Scenario("1 sd, rho 0.8, 3 configs x 2 metrics, BH", 1.0, 0.8, configs=3, metrics=2, correction="bh"),
    Scenario("null, rho 0.5", 0.0, 0.5),
    Scenario("null, rho 0.5, 3 configs x 2 metrics", 0.0, 0.5, configs=3, metrics=2),
    Scenario("null, rho 0.5, 3 configs x 2 metrics, BH", 0.0, 0.5, configs=3, metrics=2, correction="bh"),
    Scenario("null, rho 0, Welch", 0.0, 0.0, paired=False),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=500, help="simulated studies per scenario")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    table = pd.DataFrame({s.name: rates(rng, s, args.studies) for s in tqdm(SCENARIOS, desc="scenarios")}).T
    print(f"{args.studies} simulated studies per scenario, {SEEDS} seeds each, alpha 0.05 after correction "
          "(Holm unless BH)\n")
    print(table[["tests", "planted flagged", "planted p<0.05 uncorrected", "null cells flagged",
                 "studies with a null flag"]].to_markdown(floatfmt=["", ".0f"] + [".3f"] * 4))


if __name__ == "__main__":
    main()
