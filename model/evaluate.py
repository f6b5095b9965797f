"""Fixed-budget, fixed-seed evaluation on the validation split, so every run is comparable.

``evaluate`` returns flat metric keys:

- ``loss/<m>``, ``acc/<m>`` (and ``loss/mean``, ``acc/mean`` over modalities): cross-entropy
  and token accuracy under ``random`` masking with a fixed mask seed and the data set's default
  budgets (``model.fit_to_data.default_budgets``: 128 input and 64 target tokens, fewer on a smaller set).
- Cross-modal tasks, generated (``model.generate``), decoded to native form and scored
  against exact ground truth re-rendered from the generator (``model.metrics``); the dense
  tasks (``Task.dense``) decode the predicted distribution per pixel in one pass:
  ``rgb_to_semseg/miou``, ``rgb_to_depth/delta1``, ``rgb_to_depth/abs_rel``,
  ``rgb_to_caption/attr_acc``, ``rgb_to_boxes/miou``, ``caption_to_rgb/verifier``.
- ``probe/count_acc``: a ridge probe on mean-pooled encoder features of rgb-only inputs,
  fitted on train scenes, predicting the number of visible objects of val scenes.

Every name is one MLflow stores as it is (letters, digits, ``_ - . /``): stores written before
the tasks were named ``<given>_to_<target>`` hold ``rgb-_semseg`` (MLflow's rewrite of
``rgb->semseg``), which ``ablate.metric_names.current`` reads as today's name.

Cross-modal tasks and the probe need a generated data set (ground truth and tokenizers) and
their modalities; ``skipped_tasks`` says which are left out and why (on bring-your-own tokens,
all of them: only the loss and accuracy are reported). ``trivial_baselines`` and
``token_ceilings`` score constant predictions and the tokenizers' own round trip with the
same scorer: the floor and the ceiling of each metric, which the learning test
(``tests/test_train.py``) and ``benchmarks/bench_learning.py`` hold a model against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate

from model.build import load_tokenizers
from model.dataset import DatasetSpec, ModalitySpec, load_split
from model.fit_to_data import default_budgets
from model.generate import generate, pack_present, predict_distribution
from model.masking import build_masking
from model.network import FourM
from model.packing import pack
from model.tasks import PROBE, TASKS, Truth, metric_key, skipped_tasks


def _flat(task: str, scores: dict[str, float]) -> dict[str, float]:
    return {metric_key(task, k): v for k, v in scores.items()}


def decode_tokens(tokenizer: Any, spec: ModalitySpec, tokens: torch.Tensor) -> Any:
    """int64 [B, N_m] -> native values (images reshaped to their grid first)."""
    return tokenizer.decode(tokens.cpu().numpy().reshape(len(tokens), *spec.array_shape))


def _device(model: FourM) -> torch.device:
    return next(model.parameters()).device


def masked_prediction(
    model: FourM,
    specs: dict[str, ModalitySpec],
    tokens: dict[str, torch.Tensor],
    batch_size: int,
    seed: int,
    input_budget: int,
    target_budget: int,
) -> dict[str, float]:
    """Per-modality cross-entropy and token accuracy under ``random`` masking with a fixed mask seed.

    tokens: modality -> int64 [N, N_m]. Masks depend only on (seed, data), never on the run.
    """
    masking = build_masking("random", specs, input_budget, target_budget, {})
    generator = torch.Generator().manual_seed(seed)
    names = sorted(specs)
    loss, hits, count = (torch.zeros(len(names), dtype=torch.float64) for _ in range(3))
    for start in range(0, len(tokens[names[0]]), batch_size):
        batch = {n: t[start : start + batch_size] for n, t in tokens.items()}
        enc, dec = pack(specs, batch, masking(batch, generator), input_budget, target_budget)
        enc, dec = enc.to(_device(model)), dec.to(_device(model))
        logits = model(enc, dec)
        for i, n in enumerate(names):
            target = dec.target[(dec.modality == i) & ~dec.pad]
            loss[i] += F.cross_entropy(logits[n].float(), target, reduction="sum").item()
            hits[i] += (logits[n].argmax(-1) == target).sum().item()
            count[i] += len(target)
    present = count > 0
    out = {}
    for prefix, total in (("loss", loss), ("acc", hits)):
        per = total / count.clamp(min=1)
        out |= {metric_key(prefix, n): float(per[i]) for i, n in enumerate(names) if present[i]}
        out[metric_key(prefix, "mean")] = float(per[present].mean())
    return out


def encoder_features(model: FourM, specs: dict[str, ModalitySpec], rgb: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean-pooled encoder features of rgb-only inputs: int64 [N, N_rgb] -> float [N, D]."""
    out = []
    for part in rgb.split(batch_size):
        part = part.to(_device(model))
        enc, _ = pack_present(specs, {"rgb": part}, {"rgb": torch.ones_like(part, dtype=torch.bool)}, {})
        out.append(model.encode(enc).float().mean(1).cpu())  # every slot is an rgb token: no pad to exclude
    return torch.cat(out)


def ridge_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, ridge: float = 1.0) -> torch.Tensor:
    """Closed-form ridge regression onto one-hot labels, then argmax: [N, D], int64 [N], [M, D] -> int64 [M]."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)

    def design(x: torch.Tensor) -> torch.Tensor:
        x = ((x - mean) / std).double()
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    x = design(train_x)
    y = F.one_hot(train_y, int(train_y.max()) + 1).double()
    weights = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    return (design(test_x) @ weights).argmax(1)


@torch.no_grad()
def evaluate(
    model: FourM,
    specs: dict[str, ModalitySpec],
    data_root: str | Path,
    num_samples: int = 500,
    batch_size: int = 100,
    seed: int = 1234,
    input_budget: int | None = None,
    target_budget: int | None = None,
    generation_steps: int = 8,
    probe_samples: int = 1000,
    figure: str | Path | None = None,
    figure_scenes: int = 4,
    tasks: list[str] | None = None,
) -> dict[str, float]:
    """All metrics on the first ``num_samples`` val scenes (see the module docstring for keys).

    input_budget, target_budget: of the loss and accuracy (None: ``default_budgets`` of the data set).
    generation_steps: ROAR steps of caption_to_rgb (dense tasks take one pass).
    probe_samples: train scenes the count probe is fitted on (0: no probe).
    figure: if set (and the data set is generated), a PNG of the first ``figure_scenes`` scenes'
        inputs, generations and ground truth.
    tasks: the cross-modal tasks to score (default: every task of ``TASKS``).
    """
    spec = DatasetSpec.load(data_root)
    val = load_split(data_root, "val")
    num = min(num_samples, spec.splits["val"])
    val = {n: t[:num] for n, t in val.items() if n in specs}
    defaults = default_budgets(sum(s.num_tokens for s in specs.values()))
    input_budget, target_budget = input_budget or defaults[0], target_budget or defaults[1]
    was_training = model.training
    model.eval()
    try:
        metrics = masked_prediction(model, specs, val, batch_size, seed, input_budget, target_budget)
        if spec.generator is None:
            return metrics
        truth = Truth.load(spec, "val", num)
        tokenizers = load_tokenizers(data_root)
        generated, skipped = {}, skipped_tasks(specs, data_root)
        for name, task in TASKS.items():
            if name in skipped or (tasks is not None and name not in tasks):
                continue
            src, dst = task.given, task.target
            if task.dense:  # scored per pixel: decode the predicted distribution
                probs = torch.cat([predict_distribution(model, specs, {src: p.to(_device(model))}, dst).cpu()
                                   for p in val[src].split(batch_size)])
                generated[dst] = tokenizers[dst].decode_probs(probs.view(num, *specs[dst].grid, -1).numpy())
            else:
                generator = torch.Generator().manual_seed(seed)
                parts = [generate(model, specs, {src: p}, [dst], generator, generation_steps)
                         for p in val[src].split(batch_size)]
                ids = torch.cat([part.tokens[dst] for part in parts])
                generated[dst] = decode_tokens(tokenizers[dst], specs[dst], ids)
            metrics |= _flat(name, task.score(generated[dst], truth))
        if "probe" not in skipped and probe_samples > 0:
            metrics[PROBE] = _probe(
                model, specs, data_root, spec, val["rgb"], truth, probe_samples, batch_size
            )
    finally:
        model.train(was_training)
    if figure is not None and generated:
        _figure(figure, truth, generated, figure_scenes)
    return metrics


def _probe(
    model: FourM,
    specs: dict[str, ModalitySpec],
    data_root: str | Path,
    spec: DatasetSpec,
    val_rgb: torch.Tensor,
    val_truth: Truth,
    probe_samples: int,
    batch_size: int,
) -> float:
    """Object-count accuracy on val of a ridge probe fitted on ``probe_samples`` train scenes."""
    num_train = min(probe_samples, spec.splits["train"])
    train_rgb = load_split(data_root, "train", ["rgb"])["rgb"][:num_train]
    train_counts = torch.from_numpy(Truth.load(spec, "train", num_train).counts)
    pred = ridge_probe(
        encoder_features(model, specs, train_rgb, batch_size),
        train_counts,
        encoder_features(model, specs, val_rgb, batch_size),
    )
    return float((pred.numpy() == val_truth.counts).mean())


def _figure(out: str | Path, truth: Truth, generated: dict[str, Any], scenes: int) -> Path:
    from model.show import generation_figure  # matplotlib only when a figure is asked for

    given = {task.given: truth.native(task.given)[:scenes] for task in TASKS.values() if task.target in generated}
    return generation_figure(
        given,
        {m: v[:scenes] for m, v in generated.items()},
        {m: truth.native(m)[:scenes] for m in generated},
        out,
        canvas=truth.cfg.canvas,
        num_classes=truth.cfg.num_classes,
    )


def trivial_baselines(data_root: str | Path, num_samples: int = 500, reference_samples: int = 1000) -> dict[str, float]:
    """The metrics of predictions that ignore the input, fitted on ``reference_samples`` train scenes.

    semseg: the majority class everywhere; depth: the per-pixel mean depth map; caption and
    boxes: ``max_objects`` copies of the most frequent attributes / class and the mean box;
    caption_to_rgb: the true image of another scene; count probe: the majority count.
    """
    spec = DatasetSpec.load(data_root)
    truth = Truth.load(spec, "val", min(num_samples, spec.splits["val"]))
    train = Truth.load(spec, "train", min(reference_samples, spec.splits["train"]))
    metrics = {}
    for name, task in TASKS.items():
        metrics |= _flat(name, task.score(task.trivial(truth, train), truth))
    metrics[PROBE] = float((truth.counts == np.bincount(train.counts).argmax()).mean())
    return metrics


def token_ceilings(data_root: str | Path, num_samples: int = 500) -> dict[str, float]:
    """The metrics of the val tokens themselves, decoded: the best a model predicting tokens can score."""
    spec = DatasetSpec.load(data_root)
    num = min(num_samples, spec.splits["val"])
    truth = Truth.load(spec, "val", num)
    tokenizers = load_tokenizers(data_root)
    val = load_split(data_root, "val", sorted({task.target for task in TASKS.values()}))
    metrics = {}
    for name, task in TASKS.items():
        dst = task.target
        metrics |= _flat(name, task.score(decode_tokens(tokenizers[dst], spec.modalities[dst], val[dst][:num]), truth))
    return metrics


def eval_table(results: dict[str, float]) -> str:
    """The evaluation as a two-column table, cross-modal tasks first."""
    rows = sorted(results.items(), key=lambda kv: ("_to_" not in kv[0] and not kv[0].startswith("probe"), kv[0]))
    return tabulate([(k, f"{v:.4f}") for k, v in rows], headers=["metric (val)", "value"], tablefmt="github")
