import pytest
import torch
from test_masking import SPECS, make_tokens

from model.masking import build_masking
from model.packing import pack
from model.tokenizers import FIRST_SENTINEL, PAD

NAMES = sorted(SPECS)


def packed(input_budget=12, target_budget=10, b=32, name="dirichlet"):
    tokens = make_tokens(SPECS, b)
    masks = build_masking(name, SPECS, input_budget, target_budget, {})(tokens, torch.Generator().manual_seed(0))
    return tokens, masks, *pack(SPECS, tokens, masks, input_budget, target_budget)


def scatter_back(slots, values, b):
    """Per modality, the [B, N_m] grid of slot values (-1 where no slot points)."""
    out = {}
    for i, n in enumerate(NAMES):
        grid = torch.full((b, SPECS[n].num_tokens), -1)
        rows, cols = torch.nonzero((slots.modality == i) & ~slots.pad, as_tuple=True)
        grid[rows, slots.position[rows, cols]] = values[rows, cols]
        out[n] = grid
    return out


def test_encoder_slots_are_the_inputs():
    tokens, masks, enc, _ = packed()
    assert enc.tokens.shape == (32, 12)
    assert torch.equal((~enc.pad).sum(1), sum(m.input.sum(1) for m in masks.values()))
    grids = scatter_back(enc, enc.tokens, 32)
    for n in NAMES:
        assert torch.equal(grids[n] >= 0, masks[n].input)
        assert torch.equal(grids[n][masks[n].input], tokens[n][masks[n].input])
    assert (enc.tokens[enc.pad] == 0).all() and (enc.modality[enc.pad] == 0).all()


def test_decoder_targets_and_teacher_forcing():
    tokens, masks, _, dec = packed(target_budget=30)
    grids = scatter_back(dec, dec.target, 32)
    for n in NAMES:
        assert torch.equal(grids[n][masks[n].target], tokens[n][masks[n].target])
    # Slots run by modality, then position; a sequence slot's input is the previous target of its modality.
    key = dec.modality * 1000 + dec.position
    valid = ~dec.pad
    assert ((key[:, 1:] > key[:, :-1]) | ~valid[:, 1:]).all()
    caption = NAMES.index("caption")
    for row in range(32):
        sel = valid[row] & (dec.modality[row] == caption)
        expected = torch.cat([torch.tensor([FIRST_SENTINEL]), dec.target[row, sel]])[: int(sel.sum())]
        assert torch.equal(dec.tokens[row, sel], expected)
    assert (dec.tokens[dec.modality != caption] == PAD).all() and (dec.tokens[dec.pad] == PAD).all()


def test_budget_above_token_count_pads():
    total = sum(s.num_tokens for s in SPECS.values())
    _, _, enc, dec = packed(input_budget=total + 5, target_budget=total + 3, name="random")
    assert enc.pad.shape == (32, total + 5) and dec.pad.shape == (32, total + 3)
    assert enc.pad[:, -5:].all()


def test_too_many_selected_raises():
    tokens, masks, _, _ = packed()
    with pytest.raises(ValueError, match="more than the budget 3"):
        pack(SPECS, tokens, masks, 3, 10)
