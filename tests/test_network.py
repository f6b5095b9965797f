import dataclasses

import pytest
import torch
import torch.nn.functional as F
from test_masking import SPECS, make_tokens

from model.batch import DecoderInput, EncoderInput
from model.masking import build_masking
from model.network import MODEL_PRESETS, FourM, GridBias, ModelConfig
from model.packing import pack

NAMES = sorted(SPECS)
B = 8


def batch(input_budget=12, target_budget=10, seed=0):
    tokens = make_tokens(SPECS, B, seed)
    strategy = build_masking("dirichlet", SPECS, input_budget, target_budget, {})
    masks = strategy(tokens, torch.Generator().manual_seed(seed))
    return tokens, masks, *pack(SPECS, tokens, masks, input_budget, target_budget)


def model(**changes):
    torch.manual_seed(0)
    return FourM(dataclasses.replace(MODEL_PRESETS["tiny"], **changes), SPECS).eval()


def test_shapes():
    _, _, enc, dec = batch()
    net = model()
    assert net.encode(enc).shape == (B, 12, 64)
    assert net.logits(enc, dec, "rgb").shape == (B, 10, SPECS["rgb"].vocab_size)
    logits = net(enc, dec)
    for i, n in enumerate(NAMES):
        assert logits[n].shape == (((dec.modality == i) & ~dec.pad).sum(), SPECS[n].vocab_size)


def test_padding_never_attended_nor_in_loss():
    tokens, masks, enc, dec = batch()
    net = model()
    loss, _ = net.loss(enc, dec)
    logits = net(enc, dec)
    # Garbage in every pad slot changes nothing.
    enc2 = EncoderInput(enc.tokens.masked_fill(enc.pad, 5), enc.modality.masked_fill(enc.pad, 1),
                        enc.position.masked_fill(enc.pad, 3), enc.pad)
    dec2 = DecoderInput(dec.target.masked_fill(dec.pad, 7), dec.tokens.masked_fill(dec.pad, 9),
                        dec.modality.masked_fill(dec.pad, 2), dec.position.masked_fill(dec.pad, 1), dec.pad)
    assert torch.equal(net.loss(enc2, dec2)[0], loss)
    # More pad slots (longer fixed lengths) change nothing either: pads are never keys.
    enc3, dec3 = pack(SPECS, tokens, masks, 20, 17)
    assert torch.allclose(net.loss(enc3, dec3)[0], loss, atol=1e-5)
    for n in NAMES:
        assert torch.allclose(net(enc3, dec3)[n], logits[n], atol=1e-5)


def test_decoder_attention_structure():
    _, _, enc, dec = batch(target_budget=30)
    net = model()
    base = net.logits(enc, dec, "caption")
    caption = NAMES.index("caption")
    row = int(((dec.modality == caption) & ~dec.pad).sum(1).argmax())
    slots = torch.nonzero((dec.modality[row] == caption) & ~dec.pad[row]).flatten()
    assert len(slots) >= 2
    # Changing the last caption slot's input affects only that slot (causal within the sequence).
    tokens = dec.tokens.clone()
    tokens[row, slots[-1]] = 20
    changed = net.logits(enc, dec._replace(tokens=tokens), "caption")
    diff = (changed - base).abs().amax(-1)[row]
    assert diff[slots[-1]] > 0
    assert torch.all(diff[torch.arange(dec.pad.shape[1]) != slots[-1]] == 0)


def test_no_nan_with_fully_padded_samples():
    tokens, masks, _, _ = batch()
    masks = {n: m._replace(input=m.input.clone(), target=m.target.clone()) for n, m in masks.items()}
    for m in masks.values():
        m.input[0] = False  # sample 0: nothing at all
        m.target[0] = False
        m.input[1] = False  # sample 1: targets but no inputs
    enc, dec = pack(SPECS, tokens, masks, 12, 10)
    assert enc.pad[:2].all() and dec.pad[0].all() and not dec.pad[1].all()
    net = model()
    assert torch.isfinite(net.encode(enc)).all()
    assert torch.isfinite(net.logits(enc, dec, "rgb")).all()
    loss, _ = net.loss(enc, dec)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_no_targets_gives_zero_loss_with_graph():
    _, _, enc, dec = batch()
    dec = dec._replace(pad=torch.ones_like(dec.pad))
    loss, per_modality = model().loss(enc, dec)
    loss.backward()
    assert loss.item() == 0 and per_modality == {}


@pytest.mark.parametrize("weighting", ["mod", "token"])
def test_loss_weighting(weighting):
    _, _, enc, dec = batch(target_budget=30)
    net = model(loss_weighting=weighting)
    logits = net(enc, dec)
    ce = {n: F.cross_entropy(logits[n], dec.target[(dec.modality == i) & ~dec.pad], reduction="none")
          for i, n in enumerate(NAMES)}
    present = [n for n in NAMES if len(ce[n])]
    expected = (torch.stack([ce[n].mean() for n in present]).mean() if weighting == "mod"
                else torch.cat(list(ce.values())).mean())
    loss, per_modality = net.loss(enc, dec)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert sorted(per_modality) == present


def test_training_step_lowers_loss():
    _, _, enc, dec = batch(input_budget=20, target_budget=20)
    net = model().train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss, _ = net.loss(enc, dec)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert net.loss(enc, dec)[0].item() < 0.7 * first


@pytest.mark.parametrize("changes,message", [
    ({"heads": 5}, "model.heads=5"),
    ({"dim": 66}, "model.dim=66"),
    ({"loss_weighting": "sample"}, "must be one of mod, token"),
    ({"dropout": 1.0}, "model.dropout"),
    ({"grid_bias": "alibi"}, "model.grid_bias='alibi': must be one of fixed, learned, none"),
])
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ModelConfig(), **changes).validate()


def test_presets_valid():
    for cfg in MODEL_PRESETS.values():
        cfg.validate()
    assert MODEL_PRESETS["base"].dim == 768 and MODEL_PRESETS["base"].enc_depth == 12


def test_grid_bias_depends_on_the_cell_offset_between_image_tokens_only():
    bias = GridBias(heads=4, specs=[SPECS[n] for n in NAMES])
    image, sequence = NAMES.index("rgb"), NAMES.index("caption")
    other_image = NAMES.index("depth")
    # query: rgb cell (1, 1); keys: depth (1, 1), depth (1, 2), rgb (3, 3), caption position 5
    mod_q, pos_q = torch.tensor([[image]]), torch.tensor([[1 * 4 + 1]])
    mod_k, pos_k = torch.tensor([[other_image, other_image, image, sequence]]), torch.tensor([[5, 6, 15, 5]])
    b = bias("cross", mod_q, pos_q, mod_k, pos_k)[0]  # [H, 1, 4]
    assert b.shape == (4, 1, 4)
    assert (b[:, 0, 0] == 0).all()  # the same cell in another modality: no penalty
    assert (b[:, 0, 1] < 0).all() and (b[:, 0, 2] < b[:, 0, 1]).all()  # farther cells, larger penalties
    assert (b[:, 0, 3] == 0).all()  # a sequence token has no cell
    assert b[0, 0, 2] < b[-1, 0, 2]  # the first head is the most local


def test_codebook_embeddings_and_heads_give_alike_codes_alike_rows():
    codebooks = {"rgb": torch.randn(SPECS["rgb"].vocab_size, 12, generator=torch.Generator().manual_seed(0))}
    codebooks["rgb"][1] = codebooks["rgb"][0]  # ids 0 and 1 stand for the same patch
    torch.manual_seed(0)
    net = FourM(MODEL_PRESETS["tiny"], SPECS, codebooks).eval()
    with torch.no_grad():
        net.token_emb.weight.zero_()  # only the codebook part is left
        net.out["rgb"].weight.zero_()
        net.codebook_out["rgb"].weight.normal_()
    rows = net._token_table()[net.vocab_offset[NAMES.index("rgb")]:][:3]
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])
    logits = net.head("rgb", torch.randn(5, net.cfg.dim))
    assert torch.allclose(logits[:, 0], logits[:, 1]) and not torch.allclose(logits[:, 0], logits[:, 2])
    with pytest.raises(ValueError, match="codebook 'caption'"):
        FourM(MODEL_PRESETS["tiny"], SPECS, {"caption": torch.zeros(SPECS["caption"].vocab_size, 3)})
