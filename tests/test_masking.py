import pytest
import torch

from model.dataset import ModalitySpec
from model.masking import build_masking
from model.masking.dirichlet import dirichlet, log_gamma
from model.tokenizers import EOS, PAD

SPECS = {
    "rgb": ModalitySpec("rgb", "image", 32, grid=(4, 4)),
    "depth": ModalitySpec("depth", "image", 32, grid=(4, 4)),
    "caption": ModalitySpec("caption", "sequence", 40, max_len=8),
}
IMAGES = {n: ModalitySpec(n, "image", 32, grid=(8, 8)) for n in ("a", "b", "c")}


def make_tokens(specs, b, seed=0):
    """Random tokens; sequences get random lengths 0..max_len-1 words, then EOS, then PAD."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, s in specs.items():
        t = torch.randint(3, s.vocab_size, (b, s.num_tokens), generator=g)
        if s.kind == "sequence":
            length = torch.randint(0, s.max_len, (b, 1), generator=g)
            pos = torch.arange(s.max_len)
            t = torch.where(pos < length, t, torch.where(pos == length, EOS, PAD))
        out[name] = t
    return out


def run(name, specs, input_budget, target_budget, b=256, seed=0, **params):
    tokens = make_tokens(specs, b)
    strategy = build_masking(name, specs, input_budget, target_budget, params)
    return tokens, strategy(tokens, torch.Generator().manual_seed(seed))


def test_random_counts_exact():
    tokens, masks = run("random", SPECS, 20, 15)
    available = sum((t != PAD).sum(1) if SPECS[n].kind == "sequence" else t.shape[1] for n, t in tokens.items())
    num_input = sum(m.input.sum(1) for m in masks.values())
    num_target = sum(m.target.sum(1) for m in masks.values())
    assert torch.equal(num_input, available.clamp(max=20))
    assert torch.equal(num_target, (available - num_input).clamp(max=15))


def test_random_is_uniform_over_tokens():
    _, masks = run("random", IMAGES, 24, 24, b=2000)
    for m in masks.values():  # equal-sized modalities: a third of the budget each
        assert abs(m.input.sum(1).float().mean().item() - 8) < 0.3


def test_alpha_zero_never_chosen():
    _, masks = run("dirichlet", SPECS, 20, 20, b=1000, input_alphas={"rgb": 0, "depth": 1, "caption": 1},
                   target_alphas={"rgb": 1, "depth": 0.0, "caption": 1})
    assert not masks["rgb"].input.any()
    assert not masks["depth"].target.any()
    assert masks["rgb"].target.any() and masks["depth"].input.any()


def test_symmetric_shares_match_expectation():
    # Budget far below each modality's 64 tokens: no clamping, every share averages budget / 3.
    _, masks = run("dirichlet", IMAGES, 24, 24, b=4000)
    assert (sum(m.input.sum(1) for m in masks.values()) == 24).all()
    assert (sum(m.target.sum(1) for m in masks.values()) == 24).all()
    for m in masks.values():
        assert abs(m.input.sum(1).float().mean().item() - 8) < 0.4
        assert abs(m.target.sum(1).float().mean().item() - 8) < 0.4


def test_budget_range_inclusive():
    _, masks = run("dirichlet", IMAGES, 5, 4, b=500, input_budget_min=2, target_budget_min=0)
    assert set(sum(m.input.sum(1) for m in masks.values()).tolist()) == {2, 3, 4, 5}
    assert set(sum(m.target.sum(1) for m in masks.values()).tolist()) == {0, 1, 2, 3, 4}


def test_mixture_weights_and_shared_component():
    # Component 0: rgb in, depth out; component 1: depth in, rgb out.
    _, masks = run("dirichlet", IMAGES, 10, 10, b=3000,
                   input_alphas=[{"a": 1, "b": 0, "c": 0}, {"a": 0, "b": 1, "c": 0}],
                   target_alphas=[{"a": 0, "b": 1, "c": 0}, {"a": 1, "b": 0, "c": 0}], weights=[0.8, 0.2])
    first = masks["a"].input.any(1)
    assert abs(first.float().mean().item() - 0.8) < 0.04
    assert torch.equal(first, masks["b"].target.any(1))
    assert torch.equal(~first, masks["b"].input.any(1))
    assert torch.equal(~first, masks["a"].target.any(1))
    assert not masks["c"].input.any() and not masks["c"].target.any()


def test_keep_schemes():
    total = sum(s.num_tokens for s in SPECS.values())  # a budget that always fits a whole sequence
    tokens, masks = run("dirichlet", SPECS, total, total, keep={"caption": "all"})
    valid = tokens["caption"] != PAD
    given = masks["caption"].input.any(1)
    assert given.any() and (~given).any()
    assert torch.equal(masks["caption"].input[given], valid[given])
    assert not masks["caption"].target[given].any()
    _, masks = run("dirichlet", SPECS, total, total, keep={"caption": "none"})
    assert not masks["caption"].input.any() and masks["caption"].target.any()


def test_gamma_and_dirichlet_moments():
    g = torch.Generator().manual_seed(0)
    alpha = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    x = log_gamma(alpha.expand(40000, -1), g).exp()
    assert torch.allclose(x.mean(0), alpha, rtol=0.05)
    assert torch.allclose(x.var(0), alpha, rtol=0.1)
    p = dirichlet(alpha.expand(40000, -1), g)
    assert torch.allclose(p.mean(0), alpha / alpha.sum(), atol=0.01)
    tiny = dirichlet(torch.tensor([1e-9, 1.0, 1e-9], dtype=torch.float64).expand(1000, -1), g)
    assert torch.isfinite(tiny).all() and (tiny[:, 1] > 0.999).all()


def test_bad_budget():
    with pytest.raises(ValueError, match="masking.target_budget=-1"):
        build_masking("random", SPECS, 12, -1)
