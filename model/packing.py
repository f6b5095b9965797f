"""Tokens + masks -> the fixed-length, padded encoder and decoder inputs of the network.

Modalities are concatenated in sorted name order (``modality`` indexes that order), then
the selected positions are moved to the front of each row with a stable argsort (4M's
``forward_mask_encoder``), so slots are ordered by modality, then by position. Lengths are
fixed (the budgets), so every batch has the same shapes; unused slots are padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.batch import DecoderInput, EncoderInput, Masks
from model.dataset import ModalitySpec
from model.tokenizers import FIRST_SENTINEL, PAD


def pack(
    specs: dict[str, ModalitySpec],
    tokens: dict[str, torch.Tensor],
    masks: dict[str, Masks],
    input_budget: int,
    target_budget: int,
    target_tokens: dict[str, torch.Tensor] | None = None,
) -> tuple[EncoderInput, DecoderInput]:
    """tokens: modality -> int64 [B, N_m]; masks: modality -> Masks [B, N_m]
    -> (EncoderInput with Le = input_budget, DecoderInput with Ld = target_budget).

    ``target_tokens`` (same shapes) replaces ``tokens`` on the decoder side, for formats whose
    input and target rows differ (T5 spans: sentinels stand for different things in each).

    A sequence slot's decoder input is the previous target token of the same modality in
    position order; the first target of a modality gets the start token ``FIRST_SENTINEL``.
    """
    names = sorted(specs)
    device = tokens[names[0]].device
    tok = torch.cat([tokens[n] for n in names], dim=1)  # [B, N]
    b = tok.shape[0]
    modality = torch.cat(
        [torch.full((specs[n].num_tokens,), i, device=device) for i, n in enumerate(names)]
    ).expand(b, -1)
    position = torch.cat([torch.arange(specs[n].num_tokens, device=device) for n in names]).expand(b, -1)
    is_sequence = torch.tensor([specs[n].kind == "sequence" for n in names], device=device)

    def gather(tok: torch.Tensor, selected: torch.Tensor, length: int, what: str) -> tuple[torch.Tensor, ...]:
        """Selected slots first, in (modality, position) order, cut or padded to ``length``."""
        if (count := int(selected.sum(1).max())) > length:
            raise ValueError(f"masks select {count} {what} tokens in a sample, more than the budget {length}")
        order = torch.argsort((~selected).to(torch.uint8), dim=1, stable=True)[:, :length]
        fill = length - order.shape[1]  # > 0 only if the budget exceeds the total token count
        pad = F.pad(~selected.gather(1, order), (0, fill), value=True)
        return tuple(
            F.pad(t.gather(1, order), (0, fill)).masked_fill(pad, 0) for t in (tok, modality, position)
        ) + (pad,)

    selected_input = torch.cat([masks[n].input for n in names], dim=1)
    selected_target = torch.cat([masks[n].target for n in names], dim=1)
    enc = EncoderInput(*gather(tok, selected_input, input_budget, "input"))
    tok_target = tok if target_tokens is None else torch.cat([target_tokens[n] for n in names], dim=1)
    target, dec_modality, dec_position, dec_pad = gather(tok_target, selected_target, target_budget, "target")

    previous = F.pad(target[:, :-1], (1, 0), value=FIRST_SENTINEL)
    same_modality = F.pad(dec_modality[:, :-1] == dec_modality[:, 1:], (1, 0), value=False)
    dec_tokens = torch.where(same_modality, previous, FIRST_SENTINEL)
    dec_tokens = dec_tokens.masked_fill(dec_pad | ~is_sequence[dec_modality], PAD)
    return enc, DecoderInput(target, dec_tokens, dec_modality, dec_position, dec_pad)
