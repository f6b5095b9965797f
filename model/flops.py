"""Model FLOPs of a training step, and MFU against a device's peak (nanoGPT's estimate, for an encoder-decoder).

nanoGPT counts 6 FLOPs per parameter per token (2 forward, 4 backward) plus 12 * dim per query-key pair per
layer for attention (q k^T and the weighted sum of v, forward and backward). Here every term is counted for the
tokens it applies to, from a packed batch's actual counts (pad slots do no useful work and are left out):

- encoder tokens: every encoder layer (attention projections 4 dim^2, MLP 2 dim hidden), the context
  projection (dim^2) and, per decoder layer, the cross-attention's key and value projections (2 dim^2);
- decoder tokens: every decoder layer (self-attention 4 dim^2, cross-attention query and output 2 dim^2, MLP);
- targets of modality m: its head, dim * V_m;
- attention pairs: encoder self (n_enc^2 per sample), decoder self (within a modality: sum of n_m^2; causal
  sequences counted in full, as nanoGPT does) and cross (n_dec * n_enc).

Embedding lookups, norms and the per-step codebook maps (a few MFLOP) are left out, as nanoGPT leaves them out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from model.batch import DecoderInput, EncoderInput
from model.config import ModelConfig

# bf16 dense tensor-core peak of one device, TFLOP/s (vendor data sheets; the sparse figures are twice these).
# More specific names first: the first that is part of ``torch.cuda.get_device_name`` wins.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)


def train_flops(cfg: ModelConfig, vocab_sizes: list[int], enc: EncoderInput, dec: DecoderInput) -> torch.Tensor:
    """Model FLOPs of forward + backward on one packed batch: an int64 scalar on the batch's device.

    ``vocab_sizes``: V_m per modality index (sorted names, as ``FourM.vocab_sizes``). Computed with tensor ops
    only, so that the training loop can sum it on the device without waiting for the step.
    """
    d, hidden = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
    n_enc = (~enc.pad).sum(1)  # [B]
    per_modality = torch.zeros(dec.pad.shape[0], len(vocab_sizes), dtype=torch.long, device=dec.pad.device)
    per_modality.scatter_add_(1, dec.modality, (~dec.pad).long())  # [B, M] targets per sample and modality
    n_dec = per_modality.sum(1)
    heads = torch.tensor(vocab_sizes, device=dec.pad.device)

    enc_params = cfg.enc_depth * (4 * d * d + 2 * d * hidden) + d * d + cfg.dec_depth * 2 * d * d
    dec_params = cfg.dec_depth * (6 * d * d + 2 * d * hidden)
    dense = enc_params * n_enc.sum() + dec_params * n_dec.sum() + d * (per_modality.sum(0) * heads).sum()
    pairs = cfg.enc_depth * (n_enc * n_enc).sum() + cfg.dec_depth * ((per_modality**2).sum() + (n_dec * n_enc).sum())
    return 6 * dense + 12 * d * pairs


def peak_tflops(device: torch.device, configured: float = 0.0) -> float | None:
    """The peak MFU is measured against: ``configured`` if > 0 (``train.peak_tflops``), else the table's entry for
    this CUDA device; None where neither is known (a CPU, an unlisted GPU)."""
    if configured > 0:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


class Throughput:
    """Tokens (non-pad encoder + decoder slots) and model FLOPs since the last ``read``, summed on the device:
    reading them every step would make the host wait for each step to finish."""

    TOKENS_PER_S, TFLOPS, MFU = "train/tokens_per_s", "train/tflops", "train/mfu"
    NAMES = (TOKENS_PER_S, TFLOPS, MFU)  # what ``read`` returns (MFU only with a known peak)

    def __init__(self, cfg: ModelConfig, vocab_sizes: list[int], device: torch.device, peak: float | None):
        self.cfg, self.vocab_sizes, self.peak = cfg, vocab_sizes, peak
        self.total = torch.zeros(2, dtype=torch.long, device=device)  # [tokens, FLOPs]
        self.start = time.perf_counter()

    def add(self, enc: EncoderInput, dec: DecoderInput) -> None:
        tokens = (~enc.pad).sum() + (~dec.pad).sum()
        self.total += torch.stack([tokens, train_flops(self.cfg, self.vocab_sizes, enc, dec)])

    def read(self, processes: int = 1, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> dict[str, float]:
        """``train/tokens_per_s``, ``train/tflops`` (achieved, all processes) and, with a known peak, ``train/mfu``
        (achieved per device / peak) since the last read; then starts a new window. ``reduce`` sums a tensor
        over the ``processes`` (data parallel)."""
        tokens, flops = (self.total if reduce is None else reduce(self.total)).tolist()
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.total.zero_()
        self.start = time.perf_counter()
        rates = {self.TOKENS_PER_S: tokens / elapsed, self.TFLOPS: flops / elapsed / 1e12}
        if self.peak is not None:
            rates[self.MFU] = rates[self.TFLOPS] / (self.peak * processes)
        return rates
