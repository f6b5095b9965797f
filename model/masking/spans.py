"""T5 span masking of sequences: drawing spans, and the sentinel format, vectorized over the batch.

``random_spans`` hides a given number of tokens of each row as a given number of contiguous
spans, uniformly over all such layouts. ``spans_to_t5`` turns a row and its hidden positions
into T5's pair (arXiv 1910.10683, and 4M's text masking)::

    tokens  a b c d e f g h [EOS]      hidden: c d, f g
    input   a b [S_0] e [S_1] h [EOS]  each span one sentinel
    target  [S_0] c d [S_1] f g        each span's sentinel, then its tokens

``t5_to_spans`` inverts it. ``to_t5`` applies the format to a whole batch of masks (the
``block`` family's ``sequence_format: t5``); it is a token transform before packing: the
encoder packs the input rows, the decoder the target rows, each at compacted positions.

Sequences are PAD-padded at the end (the data format), so a row's valid tokens are a prefix.
Sentinel ids are ``FIRST_SENTINEL + k`` for the k-th span of a row (at most ``NUM_SENTINELS``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.batch import Masks
from model.dataset import ModalitySpec
from model.masking.base import random_ranks
from model.tokenizers import FIRST_SENTINEL, NUM_SENTINELS, PAD


def span_counts(num_hidden: torch.Tensor, length: torch.Tensor, mean_span: float) -> torch.Tensor:
    """How many spans hide ``num_hidden`` of ``length`` tokens with the given mean span length (T5's rule).

    int64 [B] each -> int64 [B]: round(hidden / mean_span), at least 1 when anything is hidden, and
    at most what fits (one token per span, a visible token between spans, one sentinel per span).
    """
    spans = torch.floor(num_hidden.double() / mean_span + 0.5).long().clamp(min=1)
    spans = spans.minimum(num_hidden).minimum(length - num_hidden + 1).clamp(max=NUM_SENTINELS)
    return torch.where(num_hidden > 0, spans, 0)


def random_spans(
    length: torch.Tensor, num_hidden: torch.Tensor, num_spans: torch.Tensor, width: int, generator: torch.Generator
) -> torch.Tensor:
    """Hide ``num_hidden`` of the first ``length`` positions of each row as exactly ``num_spans`` runs.

    int64 length, num_hidden, num_spans [B] (1 <= spans <= min(hidden, length - hidden + 1) where
    hidden > 0) -> bool [B, width]. Stars and bars: the hidden tokens are cut into ``spans``
    non-empty runs (spans - 1 distinct cut points), and span j starts after b_j visible tokens,
    where b_0 < ... < b_{spans-1} are distinct draws from 0..visible; span j's t-th hidden token
    lands at position t + b_j. Every layout with that many runs is equally likely.
    """
    b, device = length.shape[0], length.device
    slots = torch.arange(width + 1, device=device).expand(b, -1)
    picked = random_ranks(slots <= (length - num_hidden)[:, None], generator) < num_spans[:, None]
    # before[:, j] = b_j: the j-th picked slot in increasing order (unpicked ones go to a spare column).
    index = torch.where(picked, picked.cumsum(1) - 1, width + 1)
    before = torch.zeros(b, width + 2, dtype=torch.long, device=device).scatter_(1, index, slots)
    t = slots[:, :width]
    cut = random_ranks((t >= 1) & (t < num_hidden[:, None]), generator) < (num_spans - 1).clamp(min=0)[:, None]
    position = t + before.gather(1, cut.long().cumsum(1))
    position = torch.where(t < num_hidden[:, None], position, width)  # the spare column
    hidden = torch.zeros(b, width + 1, dtype=torch.bool, device=device)
    return hidden.scatter_(1, position, True)[:, :width]


def _compact(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Kept entries moved to the front of each row in order, the rest PAD: [B, L] -> [B, L]."""
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
    return values.gather(1, order).masked_fill(~keep.gather(1, order), PAD)


def spans_to_t5(tokens: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 tokens [B, L] (PAD-padded), bool hidden [B, L] (non-PAD positions)
    -> (input [B, L], target [B, L]) in T5's format, PAD-padded.

    ``ValueError`` if a row has more spans than sentinels, its target (hidden tokens + one
    sentinel per span) would not fit in L, or its tokens already contain sentinel ids.
    """
    valid = tokens != PAD
    width = tokens.shape[1]
    if (hidden & ~valid).any():
        raise ValueError("spans_to_t5: hidden positions must be non-PAD tokens")
    if (valid & (tokens >= FIRST_SENTINEL) & (tokens < FIRST_SENTINEL + NUM_SENTINELS)).any():
        raise ValueError("spans_to_t5: the tokens already contain sentinel ids")
    start = hidden & ~F.pad(hidden[:, :-1], (1, 0), value=False)
    num_spans, num_hidden = start.sum(1), hidden.sum(1)
    if (num_spans > NUM_SENTINELS).any():
        raise ValueError(f"spans_to_t5: a row has {int(num_spans.max())} spans, more than {NUM_SENTINELS} sentinels")
    if (num_hidden + num_spans > width).any():
        raise ValueError(f"spans_to_t5: a target of hidden tokens + sentinels does not fit in {width} positions")
    span = start.long().cumsum(1) - 1  # the span of each hidden position
    sentinel = FIRST_SENTINEL + span.clamp(min=0)
    inputs = _compact(torch.where(start, sentinel, tokens), valid & (~hidden | start))
    # Target slot of a hidden token: hidden tokens before it + sentinels up to and including its span's.
    slot = hidden.long().cumsum(1) - hidden.long() + span + 1
    target = torch.full((tokens.shape[0], width + 1), PAD, dtype=tokens.dtype, device=tokens.device)
    target.scatter_(1, torch.where(hidden, slot, width), tokens)
    target.scatter_(1, torch.where(start, slot - 1, width), sentinel)
    return inputs, target[:, :width]


def t5_to_spans(inputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of ``spans_to_t5``: (input [B, L], target [B, L]) -> (tokens [B, L], hidden [B, L])."""
    b, width = inputs.shape
    device = inputs.device
    rows = torch.arange(b, device=device)[:, None]
    in_sentinel = (inputs >= FIRST_SENTINEL) & (inputs < FIRST_SENTINEL + NUM_SENTINELS)
    out_sentinel = (target >= FIRST_SENTINEL) & (target < FIRST_SENTINEL + NUM_SENTINELS)
    spare = NUM_SENTINELS  # a column for "not a sentinel"
    # Per span k: its target slot, and how many tokens follow it there.
    span = (out_sentinel.long().cumsum(1) - 1).clamp(min=0)
    spanned = (target != PAD) & ~out_sentinel
    lengths = torch.zeros(b, spare + 1, dtype=torch.long, device=device)
    lengths.scatter_add_(1, torch.where(spanned, span, spare), torch.ones_like(target))
    slots = torch.arange(width, device=device)
    first = torch.zeros(b, spare + 1, dtype=torch.long, device=device)
    first.scatter_(1, torch.where(out_sentinel, target - FIRST_SENTINEL, spare), slots.expand(b, -1))
    # Each input slot expands to 1 token, or to its span's length; its output start is the running sum.
    k = torch.where(in_sentinel, inputs - FIRST_SENTINEL, spare)
    size = torch.where(in_sentinel, lengths.gather(1, k), (inputs != PAD).long())
    start = size.cumsum(1) - size
    tokens = torch.full((b, width + 1), PAD, dtype=inputs.dtype, device=device)
    tokens[rows, torch.where((inputs != PAD) & ~in_sentinel, start, width)] = inputs
    span_start = torch.zeros(b, spare + 1, dtype=torch.long, device=device)
    span_start.scatter_(1, k, start)
    offset = slots - first.gather(1, span) - 1
    position = torch.where(spanned, span_start.gather(1, span) + offset, width)
    tokens[rows, position] = target
    hidden = torch.zeros(b, width + 1, dtype=torch.bool, device=device)
    hidden[rows, position] = True
    return tokens[:, :width], hidden[:, :width]


def to_t5(
    specs: dict[str, ModalitySpec], tokens: dict[str, torch.Tensor], masks: dict[str, Masks]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Masks]]:
    """Position masks -> (encoder tokens, decoder tokens, masks over them) with sequences in T5 format.

    Per sequence row: if it has inputs, its hidden spans are its valid positions that are not
    inputs (each one sentinel in the input); otherwise its targets. Targets must then be all of
    the hidden positions or none (the ``block`` family's t5 format guarantees it). The input
    mask covers the T5 input (visible tokens + sentinels), the target mask the T5 target (or
    nothing); image modalities pass through unchanged. A strategy that counts each span's
    sentinel once in each budget keeps the packed lengths within the budgets.
    """
    enc, dec, out = dict(tokens), dict(tokens), dict(masks)
    for name, spec in specs.items():
        if spec.kind != "sequence":
            continue
        m, valid = masks[name], tokens[name] != PAD
        given, wanted = m.input.any(1, keepdim=True), m.target.any(1, keepdim=True)
        hidden = torch.where(given, valid & ~m.input, m.target)
        if (given & wanted & (m.target != hidden)).any():
            raise ValueError(f"to_t5: {name} targets must be all of its hidden positions or none")
        enc[name], dec[name] = spans_to_t5(tokens[name], hidden)
        out[name] = Masks((enc[name] != PAD) & given, (dec[name] != PAD) & wanted)
    return enc, dec, out
