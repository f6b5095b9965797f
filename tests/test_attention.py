"""Attention maps: the recorded weights are the ones the layer used, and recording is opt-in."""

import pytest
import torch
import torch.nn.functional as F
from test_network import batch, model

from model.attention import cross_attention, encoder_attention, layer_index


def test_recorded_encoder_weights_reproduce_the_layer_output():
    _, _, enc, _ = batch()
    net = model()
    weights, features = encoder_attention(net, enc, layer=0)
    assert torch.equal(features, net.encode(enc))  # recording changes nothing downstream
    assert net.encoder[0].attn.weights is None and not net.encoder[0].attn.keep_weights  # off again

    # weights @ V, projected, must be what SDPA added to the residual stream of layer 0.
    block, attn = net.encoder[0], net.encoder[0].attn
    _, where = net._encoder_input(enc)
    x = F.embedding(net.vocab_offset[enc.modality] + enc.tokens.masked_fill(enc.pad, 0), net._token_table()) + where
    h = block.norm1(x)
    b, le, d = h.shape
    v = attn.kv(h).view(b, le, 2, attn.heads, d // attn.heads)[:, :, 1].transpose(1, 2)  # [B, H, Le, d/H]
    mixed = (weights @ v).transpose(1, 2).reshape(b, le, d)
    mask = net._guard("encoder", enc, enc, ~enc.pad[:, None, :].expand(-1, le, -1))
    assert torch.allclose(attn.proj(mixed), attn(h, h, mask), atol=1e-5)

    real = ~enc.pad
    sums = weights.sum(-1)  # [B, H, Le]
    assert torch.allclose(sums[real[:, None].expand_as(sums)], torch.tensor(1.0), atol=1e-5)
    assert (weights.transpose(-1, -2)[~real[:, None].expand_as(sums)] == 0).all()  # pad slots are never keys


def test_cross_attention_rows_cover_the_encoder_slots_of_each_sample():
    _, _, enc, dec = batch(target_budget=30)
    net = model()
    logits = net.logits(enc, dec, "rgb")
    weights = cross_attention(net, enc, dec, layer=-1)
    assert weights.shape == (enc.pad.shape[0], net.cfg.heads, dec.pad.shape[1], enc.pad.shape[1])
    rows = weights[~dec.pad[:, None].expand(-1, net.cfg.heads, -1)]  # [rows, Le]
    assert torch.allclose(rows.sum(-1), torch.tensor(1.0), atol=1e-5)
    assert (weights * enc.pad[:, None, None, :] == 0).all()
    assert torch.equal(net.logits(enc, dec, "rgb"), logits)  # the model is as it was


def test_layer_index_counts_from_the_end_and_names_the_range():
    assert layer_index(2, -1) == 1 and layer_index(2, 0) == 0
    with pytest.raises(ValueError, match=r"layer 2: the model has 2 layers \(0..1, or -1 for the last\)"):
        layer_index(2, 2)
