"""Cross-modal metrics on decoded (native) predictions against exact ground truth.

Each function pools over a batch of scenes and returns one float (higher is better except
``abs_rel``). Predictions come from tokenizers' ``decode``; truth from ``model.scenes``.
"""

from __future__ import annotations

import numpy as np

from model.scenes import SceneConfig, Scenes, parse_boxes

Object = tuple[str | None, str | None, str | None]  # (size, color, shape); None where a caption names none


def semseg_miou(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Dataset-level mIoU of class maps uint8 [B, H, W], over classes present in truth or prediction."""
    pair = truth.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).clip(0, num_classes - 1).ravel()
    confusion = np.bincount(pair, minlength=num_classes**2).reshape(num_classes, num_classes)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    return float((inter[union > 0] / union[union > 0]).mean())


def depth_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """delta1 (share of pixels with max(p/g, g/p) < 1.25) and abs rel (mean |p - g| / g) of depth [B, H, W]."""
    pred = np.maximum(pred.astype(np.float64), 1e-6)
    truth = truth.astype(np.float64)
    ratio = np.maximum(pred / truth, truth / pred)
    return {"delta1": float((ratio < 1.25).mean()), "abs_rel": float((np.abs(pred - truth) / truth).mean())}


def caption_objects(words: list[str], cfg: SceneConfig) -> list[Object]:
    """The objects a caption lists before its '.', left to right: 'small red circle and large blue square'.

    Each 'and'-separated group gives (size, color, shape), the first word of each kind in it.
    """
    groups = [group.split() for group in " ".join(words).split(".")[0].split(" and ")]
    kinds = (cfg.sizes, cfg.colors, cfg.shapes)
    return [tuple(next((w for w in group if w in vocab), None) for vocab in kinds) for group in groups if group]


def scene_objects(cfg: SceneConfig, scenes: Scenes) -> list[list[Object]]:
    """Ground-truth (size, color, shape) of each scene's visible objects, left to right."""
    sizes, order = list(cfg.sizes), scenes.order()
    return [
        [
            (sizes[scenes.size[b, k]], cfg.colors[scenes.color[b, k]], cfg.shapes[scenes.shape[b, k]])
            for k in order[b]
            if scenes.present[b, k]
        ]
        for b in range(len(scenes))
    ]


def attribute_accuracy(pred: list[list[Object]], truth: list[list[Object]]) -> float:
    """Share of ground-truth attributes (3 per object) matched slot by slot, left to right.

    Missing predicted objects score 0; extra ones are not penalized (it scores what the truth names).
    """
    right = sum(
        sum(p == t for po, to in zip(ps, ts) for p, t in zip(po, to)) for ps, ts in zip(pred, truth)
    )
    return right / max(3 * sum(len(ts) for ts in truth), 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of inclusive pixel boxes (x0, y0, x1, y1): [P, 4] x [G, 4] -> [P, G]."""
    a, b = a[:, None].astype(np.float64), b[None].astype(np.float64)
    w = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1).clip(0)
    h = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1).clip(0)

    def area(x: np.ndarray) -> np.ndarray:
        return (x[..., 2] - x[..., 0] + 1).clip(0) * (x[..., 3] - x[..., 1] + 1).clip(0)

    inter = w * h
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def truth_boxes(cfg: SceneConfig, scenes: Scenes) -> list[list[tuple[str, tuple[int, int, int, int]]]]:
    """Ground-truth (class 'color_shape', box) of each scene's visible objects."""
    return [
        [
            (f"{cfg.colors[scenes.color[b, k]]}_{cfg.shapes[scenes.shape[b, k]]}", tuple(scenes.box[b, k].tolist()))
            for k in np.flatnonzero(scenes.present[b])
        ]
        for b in range(len(scenes))
    ]


def box_miou(pred_words: list[list[str]], truth: list[list[tuple[str, tuple]]], match_class: bool = True) -> float:
    """Mean IoU over ground-truth boxes after a one-to-one (Hungarian) matching per scene.

    A pair's IoU counts only if the classes agree (``match_class``); unmatched truth boxes score 0.
    """
    from scipy.optimize import linear_sum_assignment  # here: scipy.optimize would cost every reader of the task table

    total = 0.0
    for words, gt in zip(pred_words, truth):
        pred = parse_boxes(words)
        if not pred or not gt:
            continue
        iou = box_iou(np.array([b for _, b in pred]), np.array([b for _, b in gt]))
        if match_class:
            iou = iou * (np.array([c for c, _ in pred])[:, None] == np.array([c for c, _ in gt])[None])
        rows, cols = linear_sum_assignment(iou, maximize=True)
        total += float(iou[rows, cols].sum())
    return total / max(sum(len(gt) for gt in truth), 1)
