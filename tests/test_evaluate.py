import math
from pathlib import Path

import numpy as np
import pytest
import torch

from model.dataset import DatasetSpec
from model.evaluate import evaluate, ridge_probe, token_ceilings, trivial_baselines
from model.metrics import (
    attribute_accuracy,
    box_iou,
    box_miou,
    caption_objects,
    depth_metrics,
    scene_objects,
    semseg_miou,
    truth_boxes,
)
from model.network import MODEL_PRESETS, FourM
from model.scenes import SceneConfig, box_words, captions, render
from model.tasks import TASKS, direction, metric_names

CFG = SceneConfig()
KEYS = [
    "rgb_to_semseg/miou",
    "rgb_to_depth/delta1",
    "rgb_to_depth/abs_rel",
    "rgb_to_caption/attr_acc",
    "rgb_to_boxes/miou",
    "caption_to_rgb/verifier",
    "probe/count_acc",
]


@pytest.fixture(scope="module")
def scenes():
    return render(CFG, 0, "val", np.arange(64))


def shuffled(x):
    return x[1:] + x[:1] if isinstance(x, list) else np.roll(x, 1, axis=0)


def test_semseg_miou(scenes):
    assert semseg_miou(scenes.semseg, scenes.semseg, CFG.num_classes) == 1.0
    assert semseg_miou(shuffled(scenes.semseg), scenes.semseg, CFG.num_classes) < 0.5
    # Classes absent from both truth and prediction do not count.
    assert semseg_miou(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), CFG.num_classes) == 1.0


def test_depth_metrics(scenes):
    assert depth_metrics(scenes.depth, scenes.depth) == {"delta1": 1.0, "abs_rel": 0.0}
    off = depth_metrics(shuffled(scenes.depth), scenes.depth)
    assert off["delta1"] < 0.95 and off["abs_rel"] > 0.05


def test_caption_attribute_accuracy(scenes):
    truth = scene_objects(CFG, scenes)
    parsed = [caption_objects(words, CFG) for words in captions(CFG, scenes)]
    assert parsed == truth
    assert attribute_accuracy(parsed, truth) == 1.0
    assert attribute_accuracy(shuffled(parsed), truth) < 0.6
    assert caption_objects("large red and small blue square . the".split(), CFG) == [
        ("large", "red", None),
        ("small", "blue", "square"),
    ]
    assert attribute_accuracy([[("large", "red", None)]], [[("large", "red", "circle"), ("small", "red", "circle")]]) \
        == pytest.approx(2 / 6)


def test_box_miou(scenes):
    truth = truth_boxes(CFG, scenes)
    words = box_words(CFG, scenes)
    assert box_miou(words, truth) == 1.0
    assert box_miou(shuffled(words), truth) < 0.2
    assert box_miou([[]] * len(truth), truth) == 0.0
    assert box_iou(np.array([[0, 0, 1, 1]]), np.array([[1, 1, 2, 2], [0, 0, 1, 1]])).tolist() == [[1 / 7, 1.0]]


def test_ridge_probe_separates_linearly_separable_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    x = torch.randn(400, 16, generator=g) * 0.1
    x[torch.arange(400), y] += 1.0
    pred = ridge_probe(x[:300], y[:300], x[300:])
    assert (pred == y[300:]).float().mean() > 0.95


def test_evaluate_untrained_tiny_model_gives_every_metric_finite_and_reproducible(data_root, tmp_path):
    root, _ = data_root
    specs = DatasetSpec.load(root).modalities
    torch.manual_seed(0)
    net = FourM(MODEL_PRESETS["tiny"], specs).train()
    kwargs = dict(num_samples=12, batch_size=6, generation_steps=2, probe_samples=48)
    metrics = evaluate(net, specs, root, figure=tmp_path / "gen.png", **kwargs)
    assert net.training  # the mode is restored
    assert (tmp_path / "gen.png").stat().st_size > 0
    for n in specs:
        assert f"loss/{n}" in metrics and f"acc/{n}" in metrics
    assert all(k in metrics for k in KEYS)
    assert sorted(metrics) == sorted(metric_names(specs, generated=True))  # what studies validate objectives by
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics == evaluate(net, specs, root, **kwargs)


def test_baselines_below_token_ceilings(data_root):
    root, _ = data_root
    floor = trivial_baselines(root, num_samples=100, reference_samples=300)
    ceiling = token_ceilings(root, num_samples=100)
    assert sorted(floor) == sorted(KEYS)
    assert sorted(ceiling) == sorted(k for k in KEYS if not k.startswith("probe"))
    for key, value in ceiling.items():
        assert math.isfinite(floor[key]) and math.isfinite(value)
        assert (value < floor[key]) if key.endswith("abs_rel") else (value > floor[key]), key
    assert ceiling["rgb_to_caption/attr_acc"] == ceiling["rgb_to_boxes/miou"] == 1.0


def test_every_task_metric_has_a_direction_and_is_documented():
    docs = (Path(__file__).parents[1] / "docs" / "studies.md").read_text()
    for name, task in TASKS.items():
        for metric, spec in task.metrics.items():
            assert direction(f"eval/{name}/{metric}") == direction(f"{name}/{metric}") == spec.better
            assert f"`eval/{name}/{metric}`" in docs, f"docs/studies.md's metric table lacks eval/{name}/{metric}"
    assert direction("train/loss/rgb") == direction("eval/loss/mean") == "lower"
    assert direction("eval/acc/caption") == direction("eval/probe/count_acc") == "higher"
    assert direction("train/lr") is direction("train/tokens_per_s") is direction("masks/rgb/input_mean") is None
