"""The contract every masking family keeps, run on every family of the registry (``model.masking.STRATEGIES``):
a new family is tested here without being named. Family-specific behaviour lives in test_masking.py (random,
dirichlet) and test_masking_families.py (block, aligned, hard, stripes)."""

from dataclasses import fields
from pathlib import Path

import pytest
import torch
from test_masking_families import SPECS, make_tokens, valid_count

from model.config import CONF_DIR, compose
from model.masking import STRATEGIES, MaskingStrategy, build_masking
from model.masking.describe import BEGIN, COMMON, END, parameter_table, preset_file
from model.masking.spans import to_t5
from model.packing import pack
from model.tokenizers import PAD

FAMILIES = sorted(STRATEGIES)
# Parameter sets beyond the defaults that reach other branches of a family (a family without an entry runs
# its defaults and a mask_ratio).
VARIANTS = {
    "dirichlet": [
        {"input_alphas": 1.0, "target_alphas": 1.0, "input_budget_min": 0, "target_budget_min": 5},
        {"input_alphas": [1.0, {"rgb": 0.2, "depth": 0.0, "caption": 5.0}],
         "target_alphas": [{"rgb": 1.0, "depth": 1.0, "caption": 0.0}, 0.5],
         "keep": [{"caption": "all"}, {"caption": "none"}], "weights": [1, 3]},
    ],
    "block": [{"mean_span": 1.0, "min_aspect": 1.0}, {"sequence_format": "t5"},
              {"sequence_format": "t5", "mask_ratio": 0.9}],
    "aligned": [{"region": "blocks", "mask_ratio": 0.6}, {"modalities": ["rgb"]}],
    "hard": [{"random_fraction": 0.0, "mask_ratio": 0.5}],
    "stripes": [{"axis": "columns"}, {"axis": "both", "mask_ratio": 0.3}],
}
BUDGETS = [(12, 9), (60, 60), (40, 8)]  # (60, 60) exceeds the 40 tokens of SPECS
CASES = [(name, params) for name in FAMILIES for params in [{}, {"mask_ratio": 0.5}, *VARIANTS.get(name, [])]]


def _id(case):
    return f"{case[0]}-{','.join(f'{k}={v}' for k, v in case[1].items()) or 'defaults'}"


@pytest.mark.parametrize("input_budget,target_budget", BUDGETS)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_invariants(case, input_budget, target_budget):
    name, params = case
    tokens = make_tokens(SPECS, 256)
    strategy = build_masking(name, SPECS, input_budget, target_budget, params)
    masks = strategy(tokens, torch.Generator().manual_seed(0))
    assert list(masks) == sorted(SPECS)
    for n, m in masks.items():
        assert m.input.shape == m.target.shape == tokens[n].shape
        assert m.input.dtype == m.target.dtype == torch.bool
        assert not (m.input & m.target).any(), "inputs and targets overlap"
        if SPECS[n].kind == "sequence":  # image token 0 is a code like any other
            assert not ((m.input | m.target) & (tokens[n] == PAD)).any(), "PAD selected"
    # Packing checks the budgets, in T5 format with one slot per sentinel.
    if strategy.sequence_format == "t5":
        enc_tokens, dec_tokens, masks = to_t5(SPECS, tokens, masks)
        enc, _ = pack(SPECS, enc_tokens, masks, input_budget, target_budget)
        _, dec = pack(SPECS, dec_tokens, masks, input_budget, target_budget)
    else:
        enc, dec = pack(SPECS, tokens, masks, input_budget, target_budget)
        assert (sum(m.input.sum(1) for m in masks.values()) <= input_budget).all()
        assert (sum(m.target.sum(1) for m in masks.values()) <= target_budget).all()
    assert enc.pad.shape[1] == input_budget and dec.pad.shape[1] == target_budget


# Dirichlet draws each modality's share of the inputs, which a modality's size can cut short.
@pytest.mark.parametrize("name,params", [(n, {}) for n in FAMILIES if n != "dirichlet"]
                         + [("aligned", {"region": "blocks"})])
@pytest.mark.parametrize("ratio", [0.15, 0.5, 0.85])
def test_mask_ratio_hides_that_fraction(name, params, ratio):
    tokens = make_tokens(SPECS, 256)
    total = sum(s.num_tokens for s in SPECS.values())
    strategy = build_masking(name, SPECS, total, 9, {"mask_ratio": ratio, **params})
    masks = strategy(tokens, torch.Generator().manual_seed(0))
    valid = valid_count(SPECS, tokens)
    inputs = sum(m.input.sum(1) for m in masks.values())
    targets = sum(m.target.sum(1) for m in masks.values())
    assert torch.equal(inputs, torch.floor((1 - ratio) * valid.double() + 0.5).long())
    assert torch.equal(targets, (valid - inputs).clamp(max=9))


@pytest.mark.parametrize("name", FAMILIES)
def test_reproducible_and_global_rng_untouched(name):
    tokens = make_tokens(SPECS, 64)
    strategy = build_masking(name, SPECS, 12, 12, {})
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = strategy(tokens, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    b = strategy(tokens, torch.Generator().manual_seed(7))
    c = strategy(tokens, torch.Generator().manual_seed(8))
    assert all(torch.equal(a[n].input, b[n].input) and torch.equal(a[n].target, b[n].target) for n in SPECS)
    assert any(not torch.equal(a[n].input, c[n].input) for n in SPECS)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_checkpointed_strategy_masks_as_the_original(name):
    """After training steps (``observe``), a fresh strategy loaded from ``state_dict`` masks identically."""
    tokens = make_tokens(SPECS, 64)
    trained = build_masking(name, SPECS, 12, 9, {})
    for step in range(3):
        trained.set_progress(step, 10)
        masks = trained(tokens, torch.Generator().manual_seed(step))
        if trained.learns_from_losses:
            enc, dec = pack(SPECS, tokens, masks, 12, 9)
            trained.observe(dec, torch.rand(dec.pad.shape, generator=torch.Generator().manual_seed(step)))
    restored = build_masking(name, SPECS, 12, 9, {})
    restored.load_state_dict(trained.state_dict())
    restored.set_progress(3, 10)
    trained.set_progress(3, 10)
    a, b = (s(tokens, torch.Generator().manual_seed(9)) for s in (trained, restored))
    assert all(torch.equal(a[n].input, b[n].input) and torch.equal(a[n].target, b[n].target) for n in SPECS)


@pytest.mark.parametrize("name", FAMILIES)
def test_unknown_parameters_are_refused_naming_the_allowed_ones(name):
    allowed = ", ".join(f.name for f in fields(STRATEGIES[name].Params))
    with pytest.raises(ValueError) as e:
        build_masking(name, SPECS, 12, 12, {"no_such_parameter": 1})
    assert f"masking.no_such_parameter: unknown parameter of the {name!r} masking; allowed: {allowed}" in str(e.value)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_has_its_preset_and_documents_its_parameters(name):
    family = STRATEGIES[name]
    assert family.summary() and not family.summary().startswith("``")
    for f in fields(family.Params):
        assert f.metadata.get("doc"), f"{name}: parameter {f.name} has no doc (declare it with param(...))"
    written = CONF_DIR / "masking" / f"{name}.yaml"
    assert written.is_file() and written.read_text() == preset_file(name), \
        f"{written} is behind the family: run ablate masking --write"
    composed = dict(compose([f"masking={name}"]).masking)
    assert composed == family.preset()
    stated = {f.name for f in fields(family.Params) if f.metadata.get("preset", True)}
    assert set(composed) == {"name", "input_budget", "target_budget", *stated}
    build_masking(name, SPECS, 12, 9, {k: v for k, v in composed.items() if k not in
                                       ("name", "input_budget", "target_budget")})


def test_the_docs_table_is_the_registry_table():
    docs = (Path(__file__).parents[1] / "docs" / "masking.md").read_text()
    table = docs.split(BEGIN)[1].split(END)[0].strip()
    assert table == parameter_table(), "docs/masking.md is behind the families: run ablate masking --write"
    for name in FAMILIES:
        assert f"**`{name}`**" in docs, f"docs/masking.md does not describe the {name} family"
    assert COMMON == {"mask_ratio"}


def test_a_new_family_needs_nothing_but_its_class():
    """What registering does: the name, a preset and the table follow; a second family of one name is refused."""
    from model.masking import register

    assert all(cls.name == name and issubclass(cls, MaskingStrategy) for name, cls in STRATEGIES.items())
    with pytest.raises(ValueError, match="'random' registered twice"):
        register("random")(type("Again", (MaskingStrategy,), {}))
    assert all(f"| {name} " in parameter_table() for name in FAMILIES)


@pytest.mark.parametrize("name,params,message", [
    ("nope", {}, f"allowed: {', '.join(FAMILIES)}"),
    ("random", {"ratio": 0.5}, "masking.ratio: unknown parameter"),
    ("dirichlet", {"input_alphas": {"rgb": -1, "depth": 1, "caption": 1}}, "masking.input_alphas.rgb=-1: must be >= 0"),
    ("dirichlet", {"input_alphas": [1.0, {"rgb": 1, "depth": "x", "caption": 1}]}, "masking.input_alphas[1].depth"),
    ("dirichlet", {"target_alphas": {"rgb": 1, "depth": 1}}, "no alpha for ['caption']"),
    ("dirichlet", {"target_alphas": {"rgb": 1, "depth": 1, "caption": 1, "x": 1}}, "masking.target_alphas.x"),
    ("dirichlet", {"input_alphas": 0}, "at least one modality needs alpha > 0"),
    ("dirichlet", {"input_alphas": [1, 1], "keep": [None, None, None]}, "equal length"),
    ("dirichlet", {"keep": {"rgb": "all"}}, "sequence modalities only"),
    ("dirichlet", {"keep": {"caption": "most"}}, "must be one of random, all, none"),
    ("dirichlet", {"weights": [1, 2]}, "masking.weights"),
    ("dirichlet", {"input_budget_min": 13}, "masking.input_budget_min=13: must be an integer in [0, 12]"),
    ("random", {"mask_ratio": 1.5}, "masking.mask_ratio=1.5: must be null or a number in [0, 1]"),
    ("random", {"mask_ratio": {"schedule": "linear", "start": 0.5, "end": 1.2}}, "masking.mask_ratio=1.2"),
    ("random", {"mask_ratio": {"schedule": "step", "start": 0.5}}, "masking.mask_ratio.schedule='step'"),
    ("random", {"mask_ratio": {"schedule": "linear", "start": 0.5}}, "needs start and end"),
    ("random", {"mask_ratio": {"schedule": "linear", "start": 0, "end": 1, "steps": 3}}, "masking.mask_ratio.steps"),
    ("random", {"mask_ratio": {"schedule": "linear", "start": 0, "end": 1, "warmup": -1}}, "mask_ratio.warmup=-1"),
    ("block", {"mean_span": 0.5}, "masking.mean_span=0.5: must be a number >= 1"),
    ("block", {"min_aspect": 0}, "masking.min_aspect=0: must be a number in (0, 1]"),
    ("block", {"sequence_format": "bart"}, "masking.sequence_format='bart': must be one of positions, t5"),
    ("block", {"span": 3}, "masking.span: unknown parameter of the 'block' masking; allowed: mask_ratio, mean_span"),
    ("aligned", {"modalities": ["rgb", "caption"]}, "masking.modalities: ['caption'] are not image modalities"),
    ("aligned", {"region": "circles"}, "masking.region='circles': must be one of random, blocks"),
    ("aligned", {"object_cover": 0}, "masking.object_cover=0"),
    ("aligned", {"hide_objects": True}, "needs a sequence modality 'boxes'"),
    ("aligned", {"hide_objects": "yes"}, "masking.hide_objects='yes': must be true or false"),
    ("hard", {"random_fraction": -0.1}, "masking.random_fraction=-0.1: must be a number in [0.0, 1.0]"),
    ("hard", {"decay": 1.0}, "masking.decay=1.0: must be a number in [0.0, 1.0)"),
    ("hard", {"temperature": 0}, "masking.temperature=0: must be a number in [0.001, inf)"),
    ("stripes", {"axis": "diagonal"}, "masking.axis='diagonal': must be one of rows, columns, both"),
])
def test_bad_parameters(name, params, message):
    with pytest.raises(ValueError) as e:
        build_masking(name, SPECS, 12, 12, params)
    assert message in str(e.value)


def test_ablate_masking_lists_the_families_their_parameters_and_the_presets(capsys):
    from ablate.cli import main

    assert main(["masking"]) == 0
    out = capsys.readouterr().out
    assert parameter_table() in out
    assert all(f"| {name} " in out for name in [*FAMILIES, "sparse", "dense", "dirichlet_4m"])
    assert "| dense        | random    | input_budget=auto, target_budget=auto, mask_ratio=0.85" in out
