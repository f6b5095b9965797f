"""Every family's masks of a seeded batch, pinned bit for bit: a refactoring of the masking code must not change
what a seed draws (runs would no longer be reproducible from their seeds, nor resume as they were).

The cases are the contract tests' parameter sets (``test_masking_contract.CASES`` when pinned) and the aligned
family hiding the objects of real scenes. A change meant to draw other masks updates the digests:
``python tests/test_masking_pinned.py`` prints them.
"""

import hashlib

import pytest
import torch
from test_masking_contract import BUDGETS, _id
from test_masking_families import SPECS, make_tokens, scene_batch

from model.masking import build_masking

HIDE_OBJECTS = {"region": "blocks", "hide_objects": True, "mask_ratio": 0.5}  # aligned, on real scenes
MIXTURE = {"input_alphas": [1.0, {"rgb": 0.2, "depth": 0.0, "caption": 5.0}],
           "target_alphas": [{"rgb": 1.0, "depth": 1.0, "caption": 0.0}, 0.5],
           "keep": [{"caption": "all"}, {"caption": "none"}], "weights": [1, 3]}
PINNED = [  # (family, params, digest)
    ("aligned", {}, "307bba7df551487b"),
    ("aligned", {"mask_ratio": 0.5}, "f6b0afd70da7b8f7"),
    ("aligned", {"region": "blocks", "mask_ratio": 0.6}, "c58838db18c904a2"),
    ("aligned", {"modalities": ["rgb"]}, "6a704341494fcf6f"),
    ("aligned", HIDE_OBJECTS, "f8e0883a68c3f415"),
    ("block", {}, "eed91bf5abd4512c"),
    ("block", {"mask_ratio": 0.5}, "943aba5ca58e958c"),
    ("block", {"mean_span": 1.0, "min_aspect": 1.0}, "1b2d749dc3393b4b"),
    ("block", {"sequence_format": "t5"}, "78298c0915c2afc0"),
    ("block", {"sequence_format": "t5", "mask_ratio": 0.9}, "d7f8678bedf86d2f"),
    ("dirichlet", {}, "9d4fb692d459a0f7"),
    ("dirichlet", {"mask_ratio": 0.5}, "1865fa77481f7e31"),
    ("dirichlet", {"input_alphas": 1.0, "target_alphas": 1.0, "input_budget_min": 0, "target_budget_min": 5},
     "420f8d882a3f9790"),
    ("dirichlet", MIXTURE, "e3a29bba59d2498e"),
    ("hard", {}, "4c5510e2a165ba09"),
    ("hard", {"mask_ratio": 0.5}, "cc93c16bf1ee2b42"),
    ("hard", {"random_fraction": 0.0, "mask_ratio": 0.5}, "ab2a1b6aae402c64"),
    ("random", {}, "970d600a52bb128f"),
    ("random", {"mask_ratio": 0.5}, "734b8fc3c65863d8"),
    ("stripes", {}, "f27a7ff8e521e7fd"),
    ("stripes", {"mask_ratio": 0.5}, "6f5419fa49563d9e"),
    ("stripes", {"axis": "columns"}, "0bd3b8699eb2733b"),
    ("stripes", {"axis": "both", "mask_ratio": 0.3}, "2920cd44f8633409"),
]


def digest(name: str, params: dict) -> str:
    """16 hex digits of the masks of 64 samples at every budget of ``BUDGETS``, after ``set_progress(3, 10)``."""
    specs, tokens = scene_batch(64)[2:4] if params is HIDE_OBJECTS else (SPECS, make_tokens(SPECS, 64))
    h = hashlib.sha256()
    for input_budget, target_budget in BUDGETS:
        strategy = build_masking(name, specs, input_budget, target_budget, params)
        strategy.set_progress(3, 10)
        for modality, masks in strategy(tokens, torch.Generator().manual_seed(0)).items():
            h.update(modality.encode() + masks.input.numpy().tobytes() + masks.target.numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name,params,pinned", PINNED, ids=[_id(case[:2]) for case in PINNED])
def test_a_seeded_batch_masks_as_pinned(name, params, pinned):
    assert digest(name, params) == pinned


if __name__ == "__main__":
    for name, params, _ in PINNED:
        print(f"    ({name!r}, {params!r}, {digest(name, params)!r}),")
