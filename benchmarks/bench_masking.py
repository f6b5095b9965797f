"""Masking throughput: the vectorized strategies against plain per-sample Python versions.

    .venv/bin/python benchmarks/bench_masking.py [--batch 256] [--repeats 20] [--threads N]

Specs: rgb/depth/semseg 8x8 image grids (vocab 1024), caption (max_len 25, vocab 39) and
boxes (max_len 21, vocab 83) laid out as the generated data set's (1-4 objects; boxes are a
class and 4 coordinate bins per object, captions 4 words per object plus a 9-word relation,
so ``aligned`` with ``hide_objects`` can read them); budgets 128 input, 128 target (``sparse``
and ``dense`` use their presets' budgets and ratios; ``hard`` a planted loss map). Prints
samples/second (best of ``--repeats`` timed calls, after a warm-up) and, as a sanity check
that both implement the same family, the mean realized tokens per modality. Every family has
a per-sample reference written the way one would without batching (tensor ops, ``randperm``,
``torch.multinomial`` within a sample); the ``t5`` and ``blocks+objects`` variants are timed
vectorized only.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from functools import partial

import numpy as np
import torch

from model.batch import Masks
from model.dataset import ModalitySpec
from model.masking import build_masking
from model.tokenizers import EOS, PAD

SPECS = {
    **{n: ModalitySpec(n, "image", 1024, grid=(8, 8)) for n in ("rgb", "depth", "semseg")},
    "caption": ModalitySpec("caption", "sequence", 39, max_len=25),
    "boxes": ModalitySpec("boxes", "sequence", 83, max_len=21),
}
BUDGET = 128
WORDS, BINS = 19, 32  # first ordinary word id; coordinate bins at the end of the boxes vocabulary


def make_batch(b: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    tokens = {n: torch.randint(WORDS, s.vocab_size, (b, s.num_tokens), generator=generator) for n, s in SPECS.items()}
    objects = torch.randint(1, 5, (b, 1), generator=generator)
    bins = torch.randint(SPECS["boxes"].vocab_size - BINS, SPECS["boxes"].vocab_size, (b, 21), generator=generator)
    is_bin = torch.arange(21) % 5 != 0
    tokens["boxes"] = torch.where(is_bin, bins, tokens["boxes"] % (SPECS["boxes"].vocab_size - BINS - WORDS) + WORDS)
    lengths = {"caption": 4 * objects - 1 + torch.where(objects >= 2, 9, 0), "boxes": 5 * objects}
    for n, length in lengths.items():
        pos = torch.arange(SPECS[n].max_len)
        tokens[n] = torch.where(pos < length, tokens[n], torch.where(pos == length, EOS, PAD))
    return tokens


def empty_masks(tokens: dict[str, torch.Tensor]) -> dict[str, Masks]:
    return {n: Masks(torch.zeros_like(t, dtype=torch.bool), torch.zeros_like(t, dtype=torch.bool))
            for n, t in tokens.items()}


def valid_row(name: str, row: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(row, dtype=torch.bool) if SPECS[name].kind == "image" else row != PAD


def put_row(out: dict[str, Masks], i: int, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Sample ``i``'s masks over all modalities (flat bool [N], modalities in sorted order) into ``out``."""
    names = sorted(SPECS)
    sizes = [SPECS[n].num_tokens for n in names]
    for n, row_input, row_target in zip(names, inputs.split(sizes), targets.split(sizes)):
        out[n].input[i], out[n].target[i] = row_input, row_target


def naive_counts(available: int, input_budget: int, target_budget: int, mask_ratio: float | None) -> tuple[int, int]:
    """The base rule for one sample: inputs min(budget, round((1 - ratio) * valid)), targets from the rest."""
    num_input = min(input_budget, available)
    if mask_ratio is not None:
        num_input = min(num_input, math.floor((1 - mask_ratio) * available + 0.5))
    return num_input, min(target_budget, available - num_input)


def naive_random(tokens: dict[str, torch.Tensor], input_budget: int = BUDGET, target_budget: int = BUDGET,
                 mask_ratio: float | None = None) -> dict[str, Masks]:
    """One sample at a time (tensor ops within a sample): shuffle its valid positions, take the first ones."""
    names = sorted(SPECS)
    out = empty_masks(tokens)
    for i in range(len(tokens[names[0]])):
        valid = torch.cat([valid_row(n, tokens[n][i]) for n in names])
        candidates = valid.nonzero().flatten()
        order = candidates[torch.randperm(len(candidates))]
        num_input, num_target = naive_counts(len(candidates), input_budget, target_budget, mask_ratio)
        selected = torch.zeros(2, len(valid), dtype=torch.bool)
        selected[0, order[:num_input]] = True
        selected[1, order[num_input : num_input + num_target]] = True
        put_row(out, i, *selected)
    return out


def naive_dirichlet(tokens: dict[str, torch.Tensor]) -> dict[str, Masks]:
    """4M's per-sample recipe (``fourm/data/masking.py``) with symmetric alpha 1, ``torch.distributions``."""
    names = sorted(SPECS)
    dist = torch.distributions.Dirichlet(torch.ones(len(names)))
    out = empty_masks(tokens)

    def split(total: int, cap: torch.Tensor) -> torch.Tensor:
        share = (dist.sample() * total).floor().long()
        share += torch.bincount(dist.sample((total - int(share.sum()),)).argmax(-1), minlength=len(names))
        return torch.minimum(share, cap)

    for i in range(len(tokens[names[0]])):
        valid = [valid_row(n, tokens[n][i]).nonzero().flatten() for n in names]
        available = torch.tensor([len(v) for v in valid])
        input_share = split(BUDGET, available)
        target_share = split(BUDGET, available - input_share)
        for n, v, cut, size in zip(names, valid, input_share.tolist(), target_share.tolist()):
            order = v[torch.randperm(len(v))]
            out[n].input[i, order[:cut]] = True
            out[n].target[i, order[cut : cut + size]] = True
    return out


def beit_blocks(h: int, w: int, count: int, rng: np.random.Generator, min_aspect: float = 0.3) -> np.ndarray:
    """BEiT's ``MaskingGenerator`` (min block area 1): blocks until ``count`` cells are hidden."""
    mask = np.zeros((h, w), dtype=bool)
    while mask.sum() < count:
        remaining = count - int(mask.sum())
        for _ in range(10):  # BEiT's attempts per block
            area = rng.uniform(1, remaining)
            aspect = math.exp(rng.uniform(math.log(min_aspect), -math.log(min_aspect)))
            bh, bw = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 1 <= bh <= h and 1 <= bw <= w:
                top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
                new = bh * bw - int(mask[top : top + bh, left : left + bw].sum())
                if 0 < new <= remaining:
                    mask[top : top + bh, left : left + bw] = True
                    break
        else:
            break
    return mask.flatten()


def t5_spans(length: int, hidden: int, mean_span: float, rng: np.random.Generator) -> np.ndarray:
    """T5's ``random_spans_noise_mask`` on the first ``length`` tokens (spans alternate with visible runs)."""
    mask = np.zeros(length, dtype=bool)
    spans = min(max(1, round(hidden / mean_span)), hidden, length - hidden + 1) if hidden else 0
    if spans:
        cuts = np.sort(rng.choice(np.arange(1, hidden), spans - 1, replace=False))
        lengths = np.diff(np.concatenate([[0], cuts, [hidden]]))
        starts = np.sort(rng.choice(length - hidden + 1, spans, replace=False))  # visible tokens before each span
        for j, (start, size) in enumerate(zip(starts, lengths)):
            first = start + lengths[:j].sum()
            mask[first : first + size] = True
    return mask


def naive_block(tokens: dict[str, torch.Tensor]) -> dict[str, Masks]:
    """The ``block`` family one sample at a time: shares, BEiT blocks, T5 spans, random targets."""
    names = sorted(SPECS)
    rng = np.random.default_rng(0)
    out = empty_masks(tokens)
    for i in range(len(tokens[names[0]])):
        valid = [valid_row(n, tokens[n][i]).numpy() for n in names]
        available = np.array([v.sum() for v in valid])
        hidden_total = int(available.sum()) - min(BUDGET, int(available.sum()))
        share = available * hidden_total // available.sum()
        share[np.argsort(-(available * hidden_total % available.sum()))[: hidden_total - share.sum()]] += 1
        hidden = [beit_blocks(8, 8, k, rng) if SPECS[n].kind == "image" else t5_spans(int(v.sum()), k, 3.0, rng)
                  for n, v, k in zip(names, valid, share)]
        flat = np.concatenate([np.pad(hid, (0, SPECS[n].num_tokens - len(hid))) for n, hid in zip(names, hidden)])
        target = np.zeros_like(flat)
        target[rng.permutation(np.flatnonzero(flat))[:BUDGET]] = True
        put_row(out, i, torch.from_numpy(np.concatenate(valid) & ~flat), torch.from_numpy(target))
    return out


def naive_aligned(tokens: dict[str, torch.Tensor]) -> dict[str, Masks]:
    """``aligned`` (region random) one sample at a time: one permutation of the 8x8 cells hides the same cells
    in rgb, depth and semseg; the sequences take the rest of the hidden count in proportion to their lengths."""
    names, images = sorted(SPECS), ("depth", "rgb", "semseg")
    out = empty_masks(tokens)
    for i in range(len(tokens[names[0]])):
        valid = {n: valid_row(n, tokens[n][i]) for n in names}
        total = sum(int(v.sum()) for v in valid.values())
        hidden_count = total - min(BUDGET, total)
        others = total - 64 * len(images)
        cells = min(math.floor(hidden_count * 64 / total + 0.5), hidden_count // 3)  # as aligned.py orders it
        cells = min(max(cells, -((others - hidden_count) // 3)), 64)
        hidden = {n: torch.zeros(SPECS[n].num_tokens, dtype=torch.bool) for n in names}
        region = torch.randperm(64)[:cells]
        for n in images:
            hidden[n][region] = True
        left = hidden_count - 3 * cells
        caption = math.floor(left * int(valid["caption"].sum()) / max(others, 1) + 0.5)
        for n, count in (("caption", caption), ("boxes", left - caption)):
            positions = valid[n].nonzero().flatten()
            hidden[n][positions[torch.randperm(len(positions))[:count]]] = True
        flat = torch.cat([hidden[n] for n in names])
        chosen = flat.nonzero().flatten()
        target = torch.zeros_like(flat)
        target[chosen[torch.randperm(len(chosen))[:BUDGET]]] = True
        put_row(out, i, torch.cat([valid[n] for n in names]) & ~flat, target)
    return out


def naive_hard(tokens: dict[str, torch.Tensor], estimate: torch.Tensor, random_fraction: float) -> dict[str, Masks]:
    """``hard`` one sample at a time: hard targets by ``torch.multinomial`` over the loss estimate (without
    replacement), a ``random_fraction`` of targets and then the inputs uniform over what is left."""
    names = sorted(SPECS)  # the strategy's flat order (it sorts its specs; its estimate is laid out like this)
    out = empty_masks(tokens)
    for i in range(len(tokens[names[0]])):
        valid = torch.cat([valid_row(n, tokens[n][i]) for n in names])
        num_input, num_target = naive_counts(int(valid.sum()), BUDGET, BUDGET, None)
        num_random = math.floor(random_fraction * num_target + 0.5)
        hard = torch.multinomial(estimate * valid, num_target - num_random) if num_target > num_random else []
        rest = valid.clone()
        rest[hard] = False
        order = rest.nonzero().flatten()[torch.randperm(int(rest.sum()))]
        selected = torch.zeros(2, len(valid), dtype=torch.bool)
        selected[1, hard] = True
        selected[1, order[:num_random]] = True
        selected[0, order[num_random : num_random + num_input]] = True
        put_row(out, i, *selected)
    return out


def throughput(fn, tokens: dict[str, torch.Tensor], repeats: int) -> tuple[float, dict[str, Masks]]:
    masks = fn(tokens)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(tokens)
        best = min(best, time.perf_counter() - start)
    return len(next(iter(tokens.values()))) / best, masks


def realized(masks: dict[str, Masks]) -> str:
    return " ".join(f"{n}={m.input.sum(1).float().mean():.1f}/{m.target.sum(1).float().mean():.1f}"
                    for n, m in sorted(masks.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokens = make_batch(args.batch, torch.Generator().manual_seed(0))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), batch {args.batch}, "
          f"budgets {BUDGET}/{BUDGET} (sparse 208/64, dense 128/64)")
    estimate = torch.rand(sum(s.num_tokens for s in SPECS.values()), generator=torch.Generator().manual_seed(1))
    estimate = estimate.double() + 0.1  # a planted per-position loss map for ``hard``
    # label, strategy, input budget, target budget, params, per-sample reference (None: vectorized only)
    cases = [
        ("random", "random", BUDGET, BUDGET, {}, naive_random),
        ("dirichlet", "dirichlet", BUDGET, BUDGET, {}, naive_dirichlet),
        ("block", "block", BUDGET, BUDGET, {}, naive_block),
        ("block t5 spans", "block", BUDGET, BUDGET, {"sequence_format": "t5"}, None),
        ("aligned", "aligned", BUDGET, BUDGET, {}, naive_aligned),
        ("aligned blocks+objects", "aligned", BUDGET, BUDGET, {"region": "blocks", "hide_objects": True}, None),
        ("sparse (random 15%)", "random", 208, 64, {"mask_ratio": 0.15},
         partial(naive_random, input_budget=208, target_budget=64, mask_ratio=0.15)),
        ("dense (random 85%)", "random", BUDGET, 64, {"mask_ratio": 0.85},
         partial(naive_random, input_budget=BUDGET, target_budget=64, mask_ratio=0.85)),
        ("hard", "hard", BUDGET, BUDGET, {"random_fraction": 0.5},
         partial(naive_hard, estimate=estimate, random_fraction=0.5)),
    ]
    print(f"{'strategy':<24} {'impl':<11} {'samples/s':>11}  mean input/target tokens per modality")
    for label, name, input_budget, target_budget, params, reference in cases:
        strategy = build_masking(name, SPECS, input_budget, target_budget, params)
        if name == "hard":
            strategy.loss_ema, strategy.seen = estimate.clone(), torch.ones_like(estimate, dtype=torch.bool)
        generator = torch.Generator().manual_seed(0)
        fast, fast_masks = throughput(partial(strategy, generator=generator), tokens, args.repeats)
        print(f"{label:<24} {'vectorized':<11} {fast:>11,.0f}  {realized(fast_masks)}")
        if reference is not None:
            slow, slow_masks = throughput(reference, tokens, max(1, args.repeats // 10))
            print(f"{label:<24} {'per-sample':<11} {slow:>11,.0f}  {realized(slow_masks)}")
            print(f"{label:<24} {'speedup':<11} {fast / slow:>10.0f}x")


if __name__ == "__main__":
    main()
