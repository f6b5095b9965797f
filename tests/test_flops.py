"""The FLOPs estimate counts what the network multiplies, for the tokens that are not padding."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model.batch import DecoderInput, EncoderInput
from model.config import ModelConfig
from model.dataset import ModalitySpec
from model.flops import Throughput, peak_tflops, train_flops
from model.network import FourM

SPECS = {"a": ModalitySpec("a", "image", 16, grid=(2, 4)), "b": ModalitySpec("b", "sequence", 10, max_len=6)}
CFG = ModelConfig(dim=16, enc_depth=2, dec_depth=3, heads=2, grid_bias="none")


def _batch(b: int, le: int, ld: int) -> tuple[EncoderInput, DecoderInput]:
    """Every encoder slot an ``a`` token, every decoder slot a ``b`` target: no padding."""
    positions = torch.arange(max(le, ld)).expand(b, -1)
    enc = EncoderInput(torch.randint(0, 16, (b, le)), torch.zeros(b, le, dtype=torch.long), positions[:, :le],
                       torch.zeros(b, le, dtype=torch.bool))
    dec = DecoderInput(torch.randint(2, 10, (b, ld)), torch.randint(2, 10, (b, ld)),
                       torch.ones(b, ld, dtype=torch.long), positions[:, :ld], torch.zeros(b, ld, dtype=torch.bool))
    return enc, dec


def test_the_estimate_equals_the_multiplications_counted_in_a_forward_and_backward_without_padding():
    torch.manual_seed(0)
    model = FourM(CFG, SPECS)
    enc, dec = _batch(3, 7, 5)
    # The math backend runs attention as matrix products, which the counter sees forward and backward.
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model.loss(enc, dec)[0].backward()
    assert int(train_flops(CFG, model.vocab_sizes, enc, dec)) == counter.get_total_flops()


def test_pad_slots_count_for_nothing():
    enc, dec = _batch(2, 7, 5)
    padded_enc = enc._replace(pad=torch.tensor([[False] * 7, [True] * 7]))
    padded_dec = dec._replace(pad=torch.tensor([[False] * 5, [True] * 5]))
    one = EncoderInput(*(x[:1] for x in enc)), DecoderInput(*(x[:1] for x in dec))
    vocab = [16, 10]
    assert int(train_flops(CFG, vocab, padded_enc, padded_dec)) == int(train_flops(CFG, vocab, *one))
    assert int(train_flops(CFG, vocab, enc, dec)) == 2 * int(train_flops(CFG, vocab, *one))


def test_throughput_reports_tflops_and_mfu_against_the_peak():
    enc, dec = _batch(2, 7, 5)
    meter = Throughput(CFG, [16, 10], torch.device("cpu"), peak=2.0)
    meter.add(enc, dec)
    meter.add(enc, dec)
    rates = meter.read()
    flops = 2 * int(train_flops(CFG, [16, 10], enc, dec))
    assert rates["train/tflops"] / rates["train/tokens_per_s"] == pytest.approx(flops / 1e12 / (2 * (7 + 5) * 2))
    assert rates["train/mfu"] == pytest.approx(rates["train/tflops"] / 2.0)
    assert meter.read()["train/tokens_per_s"] == 0  # a new window
    assert "train/mfu" not in Throughput(CFG, [16, 10], torch.device("cpu"), peak=None).read()


def test_the_peak_is_the_configured_one_or_unknown_on_a_cpu():
    assert peak_tflops(torch.device("cpu"), 12.5) == 12.5
    assert peak_tflops(torch.device("cpu")) is None
