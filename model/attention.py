"""Attention maps of a trained ``FourM``: the weights of one layer, for one forward pass.

SDPA does not return its weights, so the chosen layer recomputes softmax(QK^T / sqrt(d)) for
that pass only (``Attention.keep_weights``); training and generation never pay for it.
Heads are kept: average them (or not) where the maps are shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from model.batch import DecoderInput, EncoderInput
from model.network import Attention, FourM


@contextmanager
def recording(attn: Attention) -> Iterator[Attention]:
    """Within the block, every forward of ``attn`` leaves its weights in ``attn.weights``."""
    attn.keep_weights = True
    try:
        yield attn
    finally:
        attn.keep_weights, attn.weights = False, None


def layer_index(depth: int, layer: int) -> int:
    """A layer index that may count from the end (-1 = last) -> 0..depth-1; ``ValueError`` if out of range."""
    if not -depth <= layer < depth:
        raise ValueError(f"layer {layer}: the model has {depth} layers (0..{depth - 1}, or -1 for the last)")
    return layer % depth


@torch.no_grad()
def encoder_attention(model: FourM, enc: EncoderInput, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention of encoder layer ``layer`` -> (weights [B, H, Le, Le], encoder features [B, Le, D]).

    Rows of pad slots are 0; each other row sums to 1 over the non-pad keys.
    """
    block = model.encoder[layer_index(len(model.encoder), layer)]
    with recording(block.attn) as attn:
        features = model.encode(enc)
        return attn.weights, features


@torch.no_grad()
def cross_attention(
    model: FourM, enc: EncoderInput, dec: DecoderInput, layer: int = -1, features: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-attention of decoder layer ``layer`` from every decoder slot to the encoder slots: [B, H, Ld, Le].

    Pass ``features = encode(enc)`` to reuse the encoder.
    """
    block = model.decoder[layer_index(len(model.decoder), layer)]
    with recording(block.cross_attn) as attn:
        model.decode(enc, dec, features)
        return attn.weights
