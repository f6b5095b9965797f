"""The racing rule (``ablate/race_rule.py``) on values with known truth: each rule of the race, one test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ablate.race_rule import RaceRule, decide, pair_p, replay, spent_alpha
from ablate.schema import RaceSpec

CONFIGS = ["a", "b", "c"]


def values_of(table: np.ndarray, configs: list[str] = CONFIGS) -> dict[str, dict[int, float]]:
    """[configs, seeds] -> config -> seed -> value."""
    return {c: {s: float(v) for s, v in enumerate(row) if np.isfinite(v)} for c, row in zip(configs, table)}


def all_ended(table: np.ndarray, configs: list[str] = CONFIGS) -> set[tuple[str, int]]:
    return {(c, s) for c in configs for s in range(table.shape[1])}


def rule_with(direction: str, min_seeds: int, max_seeds: int, **changes) -> RaceRule:
    """A race's rule as a study's ``race:`` section would give it (its defaults for what is not named)."""
    return RaceRule.of(RaceSpec.model_construct(metric="m", min_seeds=min_seeds, max_seeds=max_seeds, **changes),
                       direction)


def race(rule: RaceRule, table: np.ndarray, configs: list[str] = CONFIGS):
    return replay(rule, list(range(table.shape[1])), configs, values_of(table, configs), all_ended(table, configs))


@pytest.mark.parametrize("spending", ["pocock", "obrien_fleming"])
def test_the_looks_spend_exactly_alpha_over_a_fixed_schedule(spending):
    rule = rule_with("higher", 3, 10, every=2, alpha=0.05, spending=spending)
    looks = rule.looks()
    assert [look.seeds for look in looks] == [3, 5, 7, 9, 10]  # the maximum is always the last look
    assert [look.round for look in looks] == [1, 2, 3, 4, 5]
    assert all(look.alpha > 0 for look in looks)
    assert math.isclose(sum(look.alpha for look in looks), 0.05, rel_tol=1e-12)  # over the whole race, not per look
    assert spent_alpha(1.0, 0.05, spending) == pytest.approx(0.05)


def test_pocock_spends_more_at_the_first_look_than_obrien_fleming():
    first = {s: rule_with("higher", 3, 10, spending=s).looks()[0].alpha for s in ("pocock", "obrien_fleming")}
    assert first["pocock"] > 10 * first["obrien_fleming"]


def test_a_clearly_worse_configuration_is_eliminated_at_the_first_look_and_gets_no_more_seeds():
    rng = np.random.default_rng(0)
    table = rng.normal(0, 0.01, size=(3, 10)) + np.array([[1.0], [1.0], [0.0]])  # c far below a and b
    state = race(rule_with("higher", 3, 10), table)
    gone = state.eliminated["c"]
    assert (gone.round, gone.seeds) == (1, 3) and gone.versus in ("a", "b") and gone.p < gone.alpha
    assert state.seeds_of("c") == [0, 1, 2]
    assert "a" not in state.eliminated and "b" not in state.eliminated
    assert len(state.seeds_of("a")) == 10 and state.status == "ended"  # a and b stay undecided to the maximum


def test_an_elimination_needs_significance_after_holm_over_every_pair():
    # b beats c on every seed; a is so noisy that its pairs are far from significant. Alone, b vs c is one test
    # and significant at alpha; among three configurations it is one of 3 pairs, and Holm triples its p.
    b = np.array([0.0, 0.02, -0.01, 0.01])
    c = b - np.array([0.30, 0.34, 0.26, 0.31])
    a = np.array([5.0, -5.0, 4.0, -4.0])
    raw = pair_p((b - c)[None], 0.0, np.vstack([b, c]))[0][0]
    alpha = 2 * raw
    assert decide(np.vstack([b, c]), alpha).eliminated == {1: (0, pytest.approx(raw))}
    assert decide(np.vstack([a, b, c]), alpha).eliminated == {}
    assert decide(np.vstack([a, b, c]), 3.01 * raw).eliminated == {2: (1, pytest.approx(3 * raw))}


def test_comparisons_are_paired_over_shared_seeds():
    # The seed moves every configuration alike by far more than b trails a: paired, b is clearly worse.
    seed_effect = np.array([0.0, 5.0, -4.0, 9.0, -7.0])
    table = np.vstack([seed_effect + 1.0 + [0.0, 0.01, -0.01, 0.0, 0.005], seed_effect])
    decision = decide(table, 0.01)
    assert decision.eliminated == {1: (0, pytest.approx(decision.eliminated[1][1]))}
    # Unpaired (shuffled seeds of b), the same values show nothing.
    shuffled = np.vstack([table[0], table[1][[3, 0, 4, 1, 2]]])
    assert decide(shuffled, 0.01).eliminated == {}


def test_a_missing_seed_drops_out_of_its_pairs_only():
    table = np.array([[1.0, 1.1, 0.9, 1.0], [0.0, 0.1, np.nan, 0.05]])
    p, mean = pair_p(table[[0]] - table[[1]], 0.0, table)
    assert mean[0] == pytest.approx(np.mean([1.0, 1.0, 0.95]))  # seed 2 left out of the pair
    assert p[0] < 0.01


def test_a_difference_within_the_margin_never_eliminates_and_equals_end_in_a_tie():
    rng = np.random.default_rng(1)
    table = rng.normal(0, 0.001, size=(3, 10)) + np.array([[0.02], [0.0], [0.01]])  # all within 0.05 of a
    without = race(rule_with("higher", 3, 10), table)
    assert without.eliminated  # with no margin, these tiny but consistent differences are significant
    state = race(rule_with("higher", 3, 10, margin=0.05), table)
    assert state.eliminated == {}
    assert state.status == "tied" and state.round == 1 and set(state.tied) == {"b", "c"} and state.leader == "a"
    assert all(len(state.seeds_of(c)) == 3 for c in CONFIGS)  # the race of equals ends at the first look


def test_the_race_never_runs_past_max_seeds():
    rng = np.random.default_rng(2)
    table = rng.normal(size=(3, 6))  # equal configurations: no decision at any look
    state = race(rule_with("higher", 3, 6), table)
    assert state.status == "ended" and state.round == len(state.rule.looks()) and not state.eliminated
    assert all(state.seeds_of(c) == list(range(6)) for c in CONFIGS)


def test_the_direction_decides_which_is_worse():
    table = np.array([[1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.9, 2.02]])
    lower = race(rule_with("lower", 3, 4, alpha=0.2), table, ["a", "b"])
    higher = race(rule_with("higher", 3, 4, alpha=0.2), table, ["a", "b"])
    assert lower.winner == "a" and "b" in lower.eliminated
    assert higher.winner == "b" and "a" in higher.eliminated


def test_replay_waits_for_a_complete_round_and_later_results_never_change_a_decision():
    rng = np.random.default_rng(4)
    table = rng.normal(0, 0.01, size=(3, 8)) + np.array([[1.0], [0.99], [0.0]])
    rule = rule_with("higher", 3, 8)
    full = race(rule, table)
    ended = all_ended(table)
    waiting = replay(rule, list(range(8)), CONFIGS, values_of(table), ended - {("a", 2)})
    assert waiting.status == "racing" and waiting.round == 1 and not waiting.eliminated
    assert waiting.wanted() == {c: [0, 1, 2] for c in CONFIGS}
    # The results only up to look 2 (the rest not yet run), then with extra seeds of the eliminated configuration.
    partial = replay(rule, list(range(8)), CONFIGS, values_of(table[:, :4]),
                     {(c, s) for c in CONFIGS for s in range(4)})
    assert partial.eliminated == full.eliminated and partial.round == 3 and partial.status == "racing"
    extra = values_of(table)
    extra["c"] |= {s: 100.0 for s in range(3, 8)}  # c's later seeds, had they run, would look great
    again = replay(rule, list(range(8)), CONFIGS, extra, ended)
    assert again.eliminated == full.eliminated and again.status == full.status
    shuffled = replay(rule, list(range(8)), CONFIGS, dict(reversed(list(values_of(table).items()))), ended)
    assert shuffled.eliminated == full.eliminated


def test_equal_configurations_are_rarely_eliminated_over_the_whole_race():
    # A small A/A check (benchmarks/bench_race.py runs thousands): at alpha 0.05 over 8 looks, far fewer than the
    # 8 x 5% a test at every look would wrongly eliminate.
    rng = np.random.default_rng(5)
    rule = rule_with("higher", 3, 10)
    wrong = sum(bool(race(rule, rng.normal(size=(3, 10))).eliminated) for _ in range(300))
    assert wrong / 300 <= 0.08


def test_pooled_uses_one_variance_with_more_degrees_of_freedom():
    rng = np.random.default_rng(6)
    table = rng.normal(0, 0.5, size=(5, 3)) + np.array([[1.5], [0], [0], [0], [0]])
    paired = decide(table, 0.05, test="paired")
    pooled = decide(table, 0.05, test="pooled")
    p_paired, _ = pair_p(table[[0]] - table[[1]], 0.0, table)
    from ablate.race_rule import pooled_p

    p_pooled, _ = pooled_p(table[[0]] - table[[1]], 0.0, table)
    assert p_pooled[0] < p_paired[0]  # 8 degrees of freedom instead of 2
    assert len(pooled.eliminated) >= len(paired.eliminated)
