import numpy as np
import pytest

from model.scenes import COLOR_RGB, SceneConfig, box_words, captions, parse_boxes, render

CFG = SceneConfig()


def test_same_seed_same_scenes_different_seed_different():
    a = render(CFG, 0, "train", np.arange(50))
    b = render(CFG, 0, "train", np.arange(50))
    c = render(CFG, 1, "train", np.arange(50))
    for field in ("rgb", "depth", "semseg", "box"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.rgb, c.rgb)
    assert not np.array_equal(render(CFG, 0, "val", np.arange(50)).rgb, a.rgb)


def test_scene_depends_only_on_its_index():
    whole = render(CFG, 3, "train", np.arange(20))
    alone = render(CFG, 3, "train", np.array([7]))
    np.testing.assert_array_equal(whole.rgb[7], alone.rgb[0])


def test_config_controls_canvas_counts_shapes_colors():
    cfg = SceneConfig(canvas=48, min_objects=2, max_objects=2, shapes=["square"], colors=["red", "blue"])
    s = render(cfg, 0, "train", np.arange(40))
    assert s.rgb.shape == (40, 48, 48, 3)
    assert s.present.sum(1).max() <= 2 and s.present.shape[1] == 2
    assert set(np.unique(s.semseg)) <= {0, 1}
    assert set(np.unique(s.color[s.present])) <= {0, 1}


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="shapes"):
        SceneConfig(shapes=["blob"]).validate()
    with pytest.raises(ValueError, match="min_objects"):
        SceneConfig(min_objects=3, max_objects=2).validate()


def test_modalities_agree_with_each_other():
    s = render(CFG, 0, "val", np.arange(200))
    bg_depth = s.depth[s.semseg == 0]
    assert bg_depth.min() > CFG.max_depth  # background is behind every object
    for b in range(len(s)):
        objs = np.flatnonzero(s.present[b])
        # every labelled pixel carries the depth of a present object of that shape
        for cls in np.unique(s.semseg[b]):
            if cls == 0:
                continue
            region = s.semseg[b] == cls
            owners = [k for k in objs if s.shape[b, k] + 1 == cls]
            assert owners, "semseg region without an object"
            assert np.isin(s.depth[b][region], s.z[b, owners]).all()
        # every box encloses pixels of its object: its depth and class appear inside it
        for k in objs:
            x0, y0, x1, y1 = s.box[b, k]
            assert 0 <= x0 <= x1 < CFG.canvas and 0 <= y0 <= y1 < CFG.canvas
            inside = (s.depth[b, y0 : y1 + 1, x0 : x1 + 1] == s.z[b, k]) & (
                s.semseg[b, y0 : y1 + 1, x0 : x1 + 1] == s.shape[b, k] + 1
            )
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def _hue(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the palette color whose direction is closest to each pixel's color."""
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    return (unit(rgb.astype(float)) @ unit(palette).T).argmax(-1)


def test_nearer_object_wins_where_two_overlap_in_depth_and_rgb():
    s = render(CFG, 0, "train", np.arange(400))
    palette = np.asarray([COLOR_RGB[c] for c in CFG.colors])
    ys, xs = np.mgrid[: CFG.canvas, : CFG.canvas] + 0.5
    radius = np.asarray(list(CFG.sizes.values())) * CFG.canvas
    checked = 0
    for b, i, j in zip(*np.nonzero(s.present[:, :, None] & s.present[:, None, :])):
        # two-object scenes with two circles: coverage is analytic and nothing else is in front
        if i >= j or s.present[b].sum() != 2 or s.shape[b, i] != 0 or s.shape[b, j] != 0:
            continue
        cover = [
            (xs - s.center[b, q, 0]) ** 2 + (ys - s.center[b, q, 1]) ** 2 <= radius[s.size[b, q]] ** 2 for q in (i, j)
        ]
        both = cover[0] & cover[1]
        if not both.any():
            continue
        near = i if s.z[b, i] < s.z[b, j] else j
        assert np.allclose(s.depth[b][both], s.z[b, near])
        if "white" not in (CFG.colors[s.color[b, i]], CFG.colors[s.color[b, j]]) and s.color[b, i] != s.color[b, j]:
            assert (_hue(s.rgb[b][both], palette) == s.color[b, near]).mean() > 0.95
            checked += 1
    assert checked > 2


def test_caption_and_boxes_name_exactly_the_visible_objects():
    s = render(CFG, 0, "val", np.arange(100))
    caps = captions(CFG, s)
    boxes = box_words(CFG, s)
    for b in range(len(s)):
        objs = [k for k in s.order()[b] if s.present[b, k]]
        parsed = parse_boxes(boxes[b])
        assert len(parsed) == len(objs)
        for (cls, coords), k in zip(parsed, objs):
            assert cls == f"{CFG.colors[s.color[b, k]]}_{CFG.shapes[s.shape[b, k]]}"
            assert coords == tuple(s.box[b, k])
            assert CFG.colors[s.color[b, k]] in caps[b] and CFG.shapes[s.shape[b, k]] in caps[b]
        if len(objs) >= 2:
            assert caps[b][caps[b].index(".") + 5] in ("above", "below")
