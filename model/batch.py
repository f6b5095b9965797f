"""The contracts between masking, packing and the network: which tokens a strategy selects, and the
fixed-length inputs the encoder and decoder see.

``Masks`` is what every masking family returns per modality; ``pack`` (``model/packing.py``) turns
tokens and masks into an ``EncoderInput`` and a ``DecoderInput``, which ``FourM`` consumes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Masks(NamedTuple):
    input: torch.Tensor  # bool [B, N_m]: shown to the encoder
    target: torch.Tensor  # bool [B, N_m]: predicted by the decoder


class EncoderInput(NamedTuple):
    tokens: torch.Tensor  # int64 [B, Le]: token ids (0 in pad slots)
    modality: torch.Tensor  # int64 [B, Le]: index into sorted modality names
    position: torch.Tensor  # int64 [B, Le]: flattened position within the modality
    pad: torch.Tensor  # bool [B, Le]: True for unused slots

    def to(self, device: torch.device | str) -> EncoderInput:
        return EncoderInput(*(t.to(device) for t in self))


class DecoderInput(NamedTuple):
    target: torch.Tensor  # int64 [B, Ld]: the tokens to predict
    tokens: torch.Tensor  # int64 [B, Ld]: sequences: previous target (teacher forcing); images: PAD (unused)
    modality: torch.Tensor  # int64 [B, Ld]
    position: torch.Tensor  # int64 [B, Ld]
    pad: torch.Tensor  # bool [B, Ld]

    def to(self, device: torch.device | str) -> DecoderInput:
        return DecoderInput(*(t.to(device) for t in self))
