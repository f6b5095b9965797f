"""One strategy's answer to the page's question about one scene, as JSON-ready values.

- Predictions: ``model.generate`` (ROAR for images, autoregressive for sequences, chained in
  ``Query.targets`` order), decoded, with the model's probability of each chosen token. Painted cells
  of given images are in-painted first; the other targets are then generated from the in-painted
  image with the generator seeded as for the question without hidden cells, so what differs is the
  hiding's doing, not another random order.
- Changes (when cells are hidden): per target, which tokens differ from the answer without hidden
  cells (in-painted images: from the given image, on the hidden cells), and that answer. Answers
  without hidden cells are kept (``Answers``, by strategy and question): the page asks that question
  just before the user paints, so the before / after costs no second generation in its flow.
- Scores against the scene's ground truth, where it has one: every metric of the evaluation's tasks
  (``model.tasks.TASKS``) with that target, by the task's own scorer, on this one answer.
- Attention, heads averaged, of one layer in one pass that predicts every target from the given
  inputs (sequences teacher-forced with what was generated): encoder self-attention between the
  input slots, and decoder cross-attention from every target token to them. ``keys`` names each
  input slot (modality, position), so the page can lay weights out on grids and words.
- Training masks: what the strategy's own masking (as at its last checkpoint, fixed seed) hides
  from and asks of the model on this scene, when the scene has every modality.
- ``seconds``: the strategy's own time for all of it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from ablate.explorer import draw
from ablate.explorer.checkpoints import Strategy
from ablate.explorer.recent import Recent
from ablate.explorer.scenes import Scene
from model.attention import cross_attention, encoder_attention
from model.evaluate import decode_tokens
from model.generate import Generation, generate, pack_present
from model.masking.base import valid_positions
from model.tasks import TASKS, Truth, metric_key

GENERATION_SEED = 0  # ROAR order; fixed so that the same question gets the same answer
MASK_SEED = 0
ANSWERS_KEPT = 64  # answers without hidden cells kept for the before / after (a few scenes x strategies)

# (strategy, given modality and its tokens' bytes ..., targets in order, ROAR steps) -> that generation
AnswerKey = tuple[str, tuple[tuple[str, bytes], ...], tuple[str, ...], int]
Answers = Recent[AnswerKey, Generation]


@dataclass
class Query:
    """What the page asks every strategy, checked against the study (``Explorer.query``)."""

    scene: Scene
    given: list[str]
    targets: list[str]  # generation order: in-painted given images first
    known: dict[str, torch.Tensor]  # in-painted given image -> bool [1, N_m], False where painted hidden
    layer: int
    steps: int


def rounded(x: torch.Tensor, decimals: int = 3) -> list:
    """A tensor as nested lists of short floats (JSON size: float32 prints 17 digits)."""
    return torch.round(x.double(), decimals=decimals).tolist()


@torch.no_grad()
def predict(strategy: Strategy, query: Query, tokenizers: dict[str, Any], answers: Answers) -> dict:
    """The strategy's column of the page (module docstring); ``answers`` keeps answers without hidden cells."""
    started = time.perf_counter()
    specs = strategy.specs
    given = {m: query.scene.tokens[m] for m in query.given}
    rest = [m for m in query.targets if m not in query.known]
    painted = _generate(strategy, query, given, list(query.known), query.known)
    unhidden = _unhidden(strategy, query, given, rest, answers)  # the answer to the question without hidden cells
    out = _generate(strategy, query, {**given, **painted.tokens}, rest) if query.known else unhidden
    tokens, confidences = {**painted.tokens, **out.tokens}, {**painted.confidence, **out.confidence}
    decoded = {m: decode_tokens(tokenizers[m], specs[m], tokens[m]) for m in query.targets}  # batches of one
    predictions = {}
    for m in query.targets:
        value = draw.native(m, decoded[m][0])
        confidence = confidences[m][0]
        if specs[m].kind == "sequence":
            confidence = confidence[: len(value["words"])]
        predictions[m] = {**value, "confidence": rounded(confidence)}
    changes = _changes(strategy, query, tokens, unhidden, tokenizers) if query.known else None
    column = {**strategy.describe(), "predictions": predictions, "scores": _scores(decoded, query.scene.scored),
              "changes": changes, "attention": _attention(strategy, query, tokens),
              "training_masks": _training_masks(strategy, query.scene)}
    return {**column, "seconds": round(time.perf_counter() - started, 3)}


def _generate(strategy: Strategy, query: Query, given: dict[str, torch.Tensor], targets: list[str],
              known: dict[str, torch.Tensor] | None = None) -> Generation:
    if not targets:
        return Generation({}, {})
    return generate(strategy.model, strategy.specs, given, targets, torch.Generator().manual_seed(GENERATION_SEED),
                    query.steps, known=known)


def _unhidden(strategy: Strategy, query: Query, given: dict[str, torch.Tensor], targets: list[str],
              answers: Answers) -> Generation:
    """The answer to the question without hidden cells, kept in ``answers`` or generated and kept."""
    key: AnswerKey = (strategy.name, tuple((m, t.numpy().tobytes()) for m, t in given.items()), tuple(targets),
                      query.steps)
    answer = answers.get(key)
    if answer is None:
        answer = _generate(strategy, query, given, targets)
        answers.put(key, answer)
    return answer


def _changes(strategy: Strategy, query: Query, tokens: dict[str, torch.Tensor], unhidden: Generation,
             tokenizers: dict[str, Any]) -> dict:
    """Target -> {"against": "given" | "unhidden", "changed": positions, "of": positions compared, and for
    "unhidden" "before": that answer, native}. An in-painted image is compared with the given image on its
    hidden cells; every other target with the answer without hidden cells, over the positions either fills."""
    out = {}
    for m, seen in query.known.items():
        changed = (tokens[m] != query.scene.tokens[m])[0] & ~seen[0]
        out[m] = {"against": "given", "changed": changed.nonzero()[:, 0].tolist(), "of": int((~seen).sum())}
    for m, before in unhidden.tokens.items():
        spec = strategy.specs[m]
        filled = valid_positions(spec, tokens[m])[0] | valid_positions(spec, before)[0]
        changed = (tokens[m] != before)[0] & filled
        out[m] = {"against": "unhidden", "changed": changed.nonzero()[:, 0].tolist(), "of": int(filled.sum()),
                  "before": draw.native(m, decode_tokens(tokenizers[m], spec, before)[0])}
    return out


def _scores(decoded: dict[str, Any], truth: Truth | None) -> dict[str, list[dict]]:
    """Target -> [{"key", "label", "better", "value"}] of each evaluation task with that target, scored by the
    task's own scorer against the scene's ground truth; {} for a scene without one (typed captions, uploads)."""
    if truth is None:
        return {}
    out: dict[str, list[dict]] = {}
    for task in TASKS.values():
        if task.target not in decoded:
            continue
        for name, value in task.score(decoded[task.target], truth).items():
            metric = task.metrics[name]
            out.setdefault(task.target, []).append({
                "key": metric_key(task.name, name), "label": metric.label, "better": metric.better,
                "value": round(value, 3) if math.isfinite(value) else None})
    return out


def _attention(strategy: Strategy, query: Query, generated: dict[str, torch.Tensor]) -> dict:
    """{"keys": {"modality", "position"} per input slot, "encoder": [Le, Le], "cross": target -> per position
    a row [Le] (None where that position was not predicted)}."""
    model, specs = strategy.model, strategy.specs
    tokens = {m: query.scene.tokens[m] for m in query.given}
    inputs = {m: query.known.get(m, valid_positions(specs[m], t)) for m, t in tokens.items()}
    targets = {}
    for m in query.targets:
        if specs[m].kind == "sequence":
            tokens[m] = generated[m]  # teacher forcing with what the model wrote
            targets[m] = valid_positions(specs[m], generated[m])
        else:
            targets[m] = ~query.known[m] if m in query.known else torch.ones_like(generated[m], dtype=torch.bool)
    enc, dec = pack_present(specs, tokens, inputs, targets)
    self_weights, features = encoder_attention(model, enc, query.layer)
    cross_weights = cross_attention(model, enc, dec, query.layer, features)
    real = ~enc.pad[0]  # pack_present gives one pad slot when nothing at all is given
    keys = {"modality": [model.names[i] for i in enc.modality[0, real].tolist()],
            "position": enc.position[0, real].tolist()}
    encoder = self_weights[0].mean(0)[real][:, real]  # [Le, Le], heads averaged
    rows = cross_weights[0].mean(0)[:, real]  # [Ld, Le]
    cross = {}
    for m in query.targets:
        per_position: list[list[float] | None] = [None] * specs[m].num_tokens
        slots = ((dec.modality[0] == model.names.index(m)) & ~dec.pad[0]).nonzero()[:, 0]
        for position, row in zip(dec.position[0, slots].tolist(), rounded(rows[slots])):
            per_position[position] = row
        cross[m] = per_position
    return {"keys": keys, "encoder": rounded(encoder), "cross": cross}


def _training_masks(strategy: Strategy, scene: Scene) -> dict | None:
    """modality -> {"input": [N_m] bools, "target": [N_m] bools}; None for a scene without every modality."""
    if set(scene.tokens) != set(strategy.specs):
        return None
    masks = strategy.masking(scene.tokens, torch.Generator().manual_seed(MASK_SEED))
    return {m: {"input": mask.input[0].tolist(), "target": mask.target[0].tolist()} for m, mask in masks.items()}
