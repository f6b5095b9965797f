import numpy as np
import pytest

from model.scenes import SceneConfig, captions, render
from model.verifier import detect, verifier_score, verify

CFG = SceneConfig()


@pytest.fixture(scope="module")
def scenes():
    return render(CFG, 0, "val", np.arange(200))


def test_high_on_true_pairs_low_on_mismatched_pairs(scenes):
    words = captions(CFG, scenes)
    assert verifier_score(scenes.rgb, words, CFG) > 0.8
    assert verifier_score(np.roll(scenes.rgb, 1, axis=0), words, CFG) < 0.15


def test_names_lone_objects(scenes):
    lone = np.flatnonzero(scenes.present.sum(1) == 1)
    assert len(lone) > 20
    right = 0
    for b in lone:
        k = np.flatnonzero(scenes.present[b])[0]
        right += detect(scenes.rgb[b], CFG) == [(CFG.colors[scenes.color[b, k]], CFG.shapes[scenes.shape[b, k]])]
    assert right / len(lone) > 0.9


def test_noise_and_empty_images_do_not_pass(scenes):
    words = captions(CFG, scenes)
    noise = np.random.default_rng(0).integers(0, 256, scenes.rgb.shape, dtype=np.uint8)
    assert verifier_score(noise, words, CFG) < 0.1
    empty = np.repeat(np.round(255 * (0.42 + 0.18 * (np.arange(32) + 0.5) / 32)), 32 * 3).reshape(1, 32, 32, 3)
    assert detect(empty[0].astype(np.uint8), CFG) == []


def test_extra_objects_count_against_the_image(scenes):
    b = int(np.flatnonzero(scenes.present.sum(1) >= 3)[0])
    first_object_only = " ".join(captions(CFG, scenes)[b]).split(" and ")[0].split()
    found, out_of = verify(scenes.rgb[b], first_object_only, CFG)
    assert found <= 1 and out_of >= 3
