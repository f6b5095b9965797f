"""Any-to-any generation with a trained ``FourM``, chained across target modalities.

- Image modalities: ROAR (4M's schedule for images): a random order over the positions
  still to fill, an equal share of them decoded per step, and every decoded token fed back
  as an encoder input for the next step, so later tokens condition on earlier ones. Chosen
  over MaskGIT's confidence order because the decoder then only handles the tokens of the
  current step instead of every token still missing.
- Sequences: autoregressive. The inputs do not change while a sequence grows (it lives in
  the decoder, as in training), so the encoder runs once and its features are reused at
  every step. Step t decodes positions 0..t under the causal decoder and keeps position t;
  PAD, UNK and sentinel ids are never emitted, the last position can only be EOS, and a
  row is PAD after its EOS (finished rows leave the batch).
- Chaining: targets are generated in the given order; each finished modality becomes an
  input of the next one (e.g. rgb -> depth, then rgb + depth -> semseg).

Everything is vectorized over the batch; only the steps are a Python loop. The generator
drives the ROAR order and sampling, so a fixed seed gives a fixed generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.batch import DecoderInput, EncoderInput, Masks
from model.dataset import ModalitySpec
from model.masking.base import random_ranks, valid_positions
from model.network import FourM
from model.packing import pack
from model.tokenizers import EOS, FIRST_SENTINEL, NUM_SENTINELS, PAD, UNK


@dataclass
class Generation:
    tokens: dict[str, torch.Tensor]  # target modality -> int64 [B, N_m]
    # float [B, N_m]: the model's probability of each chosen token (1 where given, 0 after EOS)
    confidence: dict[str, torch.Tensor]


@torch.no_grad()
def generate(
    model: FourM,
    specs: dict[str, ModalitySpec],
    given: dict[str, torch.Tensor],
    targets: list[str],
    generator: torch.Generator,
    steps: int = 8,
    temperature: float = 0.0,
    known: dict[str, torch.Tensor] | None = None,
) -> Generation:
    """Generate ``targets`` in order from ``given`` (modality -> int64 [B, N_m], sequences PAD-padded).

    steps: ROAR steps per image modality (sequences take one step per token).
    temperature: 0 is greedy; above 0, samples from softmax(logits / temperature).
    known: modality -> bool [B, N_m], which positions of a given modality the encoder sees
        (default: every non-PAD token). An image modality both given and targeted is
        in-painted: its positions outside ``known`` are generated, the others kept.
    """
    known = dict(known or {})
    _check(specs, given, targets, known, steps)
    device = next(model.parameters()).device
    tokens = {n: t.to(device) for n, t in given.items()}
    inputs = {n: known[n].to(device) if n in known else valid_positions(specs[n], t) for n, t in tokens.items()}
    out = Generation({}, {})
    was_training = model.training
    model.eval()
    try:
        for name in targets:
            if specs[name].kind == "image":
                ids, conf = _roar(model, specs, tokens, inputs, name, generator, steps, temperature)
            else:
                ids, conf = _autoregressive(model, specs, tokens, inputs, name, generator, temperature)
            out.tokens[name], out.confidence[name] = ids, conf
            tokens[name], inputs[name] = ids, valid_positions(specs[name], ids)
    finally:
        model.train(was_training)
    return out


def _check(
    specs: dict[str, ModalitySpec],
    given: dict[str, torch.Tensor],
    targets: list[str],
    known: dict[str, torch.Tensor],
    steps: int,
) -> None:
    if steps < 1:
        raise ValueError(f"generate: steps={steps}; need at least 1")
    if not given:
        raise ValueError("generate: nothing given; pass at least one input modality")
    for name in [*given, *targets, *known]:
        if name not in specs:
            raise ValueError(f"generate: unknown modality {name!r}; modalities: {sorted(specs)}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"generate: duplicate targets {targets}")
    if extra := sorted(set(known) - set(given)):
        raise ValueError(f"generate: known positions for {extra}, which are not given")
    for name in set(given) & set(targets):
        if specs[name].kind != "image" or name not in known:
            raise ValueError(
                f"generate: {name!r} is both given and a target; only an image modality with `known` "
                "positions can be (in-painting)"
            )


def pack_present(
    specs: dict[str, ModalitySpec],
    tokens: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
) -> tuple[EncoderInput, DecoderInput]:
    """``pack`` for a subset of modalities: int64 tokens and bool input / target masks [B, N_m] per modality
    present; absent modalities are all-off. Budgets are the largest counts in the batch, so no slot is wasted.
    """
    first = next(iter(tokens.values()))
    b, device = first.shape[0], first.device
    off = {n: torch.zeros(b, s.num_tokens, dtype=torch.bool, device=device) for n, s in specs.items()}
    full = {n: tokens.get(n, off[n].long()) for n in specs}
    masks = {n: Masks(inputs.get(n, off[n]), targets.get(n, off[n])) for n in specs}
    num_inputs = sum(m.input.sum(1) for m in masks.values())
    num_targets = sum(m.target.sum(1) for m in masks.values())
    # At least one (pad) input slot: attention over zero keys is undefined, the guard handles one pad.
    return pack(specs, full, masks, max(1, int(num_inputs.max())), int(num_targets.max()))


@torch.no_grad()
def predict_distribution(
    model: FourM, specs: dict[str, ModalitySpec], given: dict[str, torch.Tensor], target: str
) -> torch.Tensor:
    """Every position of image modality ``target`` predicted at once from ``given`` (modality -> int64
    [B, N_m]): the model's probabilities float [B, N_target, V_target], in position order.

    For dense outputs scored per pixel, where decoding the distribution (``decode_probs``) beats
    decoding its most probable codes.
    """
    if specs[target].kind != "image" or target in given:
        raise ValueError(f"predict_distribution: {target!r} must be an image modality that is not given")
    first = next(iter(given.values()))
    b, n = first.shape[0], specs[target].num_tokens
    all_positions = torch.ones(b, n, dtype=torch.bool, device=first.device)
    inputs = {m: valid_positions(specs[m], t) for m, t in given.items()}
    enc, dec = pack_present(specs, given, inputs, {target: all_positions})
    return model.logits(enc, dec, target).float().softmax(-1)  # [B, Ld = n, V]: slots in position order


def _choose(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [..., V] -> (ids int64 [...], model probability of each id [...])."""
    probs = logits.float().softmax(-1)
    if temperature <= 0:
        ids = probs.argmax(-1)
    else:
        sampling = (logits.float() / temperature).softmax(-1).flatten(0, -2)
        # Sample where the generator lives, so a CPU generator also drives a GPU model.
        ids = torch.multinomial(sampling.to(generator.device), 1, generator=generator).to(logits.device)
        ids = ids.view(probs.shape[:-1])
    return ids, probs.gather(-1, ids[..., None])[..., 0]


def _roar(
    model: FourM,
    specs: dict[str, ModalitySpec],
    tokens: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    name: str,
    generator: torch.Generator,
    steps: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the unknown positions of image modality ``name`` in ``steps`` random-order chunks -> ([B, N], [B, N])."""
    first = next(iter(tokens.values()))
    b, n, device = first.shape[0], specs[name].num_tokens, first.device
    done = inputs.get(name, torch.zeros(b, n, dtype=torch.bool, device=device)).clone()
    ids = torch.where(done, tokens[name], 0) if name in tokens else torch.zeros(b, n, dtype=torch.long, device=device)
    conf = done.float()
    # One extra column swallows the writes of pad decoder slots.
    ids, conf = F.pad(ids, (0, 1)), F.pad(conf, (0, 1))
    rank = random_ranks((~done).to(generator.device), generator).to(device)  # unknown positions first
    todo = (~done).sum(1, keepdim=True)
    for step in range(steps):
        lo, hi = todo * step // steps, todo * (step + 1) // steps
        target = (rank >= lo) & (rank < hi)  # bool [B, N]
        if not target.any():
            continue
        enc, dec = pack_present(specs, {**tokens, name: ids[:, :n]}, {**inputs, name: done}, {name: target})
        chosen, p = _choose(model.logits(enc, dec, name), generator, temperature)  # [B, Ld] each
        where = dec.position.masked_fill(dec.pad, n)
        ids.scatter_(1, where, chosen)
        conf.scatter_(1, where, p)
        done |= target
    return ids[:, :n], conf[:, :n]


def _autoregressive(
    model: FourM,
    specs: dict[str, ModalitySpec],
    tokens: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    name: str,
    generator: torch.Generator,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode sequence modality ``name`` token by token until EOS or max_len -> ([B, L], [B, L])."""
    first = next(iter(tokens.values()))
    spec, b, device = specs[name], first.shape[0], first.device
    length = spec.max_len
    ids = torch.full((b, length), PAD, dtype=torch.long, device=device)
    conf = torch.zeros(b, length, device=device)
    banned = torch.zeros(spec.vocab_size, dtype=torch.bool, device=device)
    banned[[PAD, UNK]] = True
    banned[FIRST_SENTINEL : FIRST_SENTINEL + NUM_SENTINELS] = True
    only_eos = torch.ones_like(banned)
    only_eos[EOS] = False  # the data always ends a row with EOS

    enc, _ = pack_present(specs, tokens, inputs, {})
    features = model.encode(enc)  # inputs are fixed while the sequence grows
    active = torch.arange(b, device=device)  # rows without EOS yet; finished rows stay PAD and drop out
    for t in range(length):
        # Decoder slots are positions 0..t in order; the causal mask makes slot t see only 0..t.
        upto = (torch.arange(length, device=device) <= t).expand(len(active), -1)
        _, dec = pack_present(specs, {name: ids[active]}, {}, {name: upto})
        rows = EncoderInput(*(x[active] for x in enc))
        logits = model.head(name, model.decode(rows, dec, features[active])[:, t])  # the head at slot t only
        logits = logits.masked_fill(only_eos if t == length - 1 else banned, float("-inf"))
        chosen, p = _choose(logits, generator, temperature)
        ids[active, t], conf[active, t] = chosen, p
        active = active[chosen != EOS]
        if not len(active):
            break
    return ids, conf
