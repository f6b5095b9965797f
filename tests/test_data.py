import json
import shutil

import numpy as np
import pytest
import torch

from ablate.cli import main
from model.build import load_tokenizers, scene_config
from model.dataset import DataFormatError, DatasetSpec, array_path, batches, load_split
from model.modalities import MODALITIES
from model.scenes import render


def test_tokenizer_fidelity_on_held_out_split_meets_the_bars(data_root):
    _, fidelity = data_root
    assert fidelity["semseg"]["pixel_accuracy"] >= 0.98
    assert fidelity["rgb"]["psnr_db"] >= 28
    assert fidelity["depth"]["mae_pct_of_range"] <= 2.0
    assert fidelity["caption"]["exact_match"] == 1.0
    assert fidelity["boxes"]["exact_match"] == 1.0


def test_saved_tokenizers_reload_and_reproduce_the_stored_tokens(data_root):
    root, _ = data_root
    toks = load_tokenizers(root)
    spec = DatasetSpec.load(root)
    cfg = scene_config(spec)
    scenes = render(cfg, spec.generator["seed"], "val", np.arange(20))
    val = load_split(root, "val")
    for name, m in spec.modalities.items():
        assert toks[name].vocab_size == m.vocab_size
        ids = toks[name].encode(MODALITIES[name].truth(cfg, scenes))
        np.testing.assert_array_equal(ids.reshape(20, -1), val[name][:20].numpy())


def test_decoding_a_certain_distribution_gives_the_tokens_decoding(data_root):
    root, _ = data_root
    tokenizers = load_tokenizers(root)
    val = load_split(root, "val")
    for name in ("rgb", "depth", "semseg"):
        tokens = val[name][:4].numpy().reshape(4, 8, 8)
        probs = np.eye(tokenizers[name].vocab_size, dtype=np.float32)[tokens]
        assert np.allclose(tokenizers[name].decode_probs(probs), tokenizers[name].decode(tokens), atol=1e-5), name
    # A depth map is the expectation: half and half of two codes is their mean.
    depth, ids = tokenizers["depth"], np.array([[[3]], [[7]]])
    probs = np.zeros((1, 1, 1, depth.vocab_size), dtype=np.float32)
    probs[0, 0, 0, [3, 7]] = 0.5
    assert np.allclose(depth.decode_probs(probs)[0], depth.decode(ids).mean(0), atol=1e-6)


def test_loader_yields_batches_of_every_modality(data_root):
    root, _ = data_root
    data = load_split(root, "train")
    spec = DatasetSpec.load(root)
    batch = next(batches(data, 16, torch.Generator().manual_seed(0)))
    assert set(batch) == set(spec.modalities)
    for name, t in batch.items():
        assert t.shape == (16, spec.modalities[name].num_tokens) and t.dtype == torch.int64
    # two ranks see disjoint halves of the same global batch
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    r0, r1 = next(batches(data, 8, g(), 0, 2)), next(batches(data, 8, g(), 1, 2))
    whole = next(batches(data, 16, g()))
    assert torch.equal(torch.cat([r0["rgb"], r1["rgb"]]), whole["rgb"])


@pytest.fixture
def broken(data_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data_root[0], root)
    return root


def test_loader_refuses_a_missing_modality_file(broken):
    array_path(broken, "val", "depth").unlink()
    with pytest.raises(DataFormatError, match=r"val/depth\.npy: missing"):
        load_split(broken, "val")


def test_loader_refuses_a_wrong_shape(broken):
    path = array_path(broken, "val", "rgb")
    np.save(path, np.load(path)[:, :4])
    with pytest.raises(DataFormatError, match=r"val/rgb\.npy: shape"):
        load_split(broken, "val")


def test_loader_refuses_a_token_outside_the_vocabulary(broken):
    path = array_path(broken, "val", "caption")
    arr = np.load(path)
    arr[3, 0] = DatasetSpec.load(broken).modalities["caption"].vocab_size
    np.save(path, arr)
    with pytest.raises(DataFormatError, match=r"val/caption\.npy: token id \d+ outside the vocabulary"):
        load_split(broken, "val")


def test_loader_refuses_unequal_sample_counts(broken):
    path = array_path(broken, "val", "boxes")
    np.save(path, np.load(path)[:-1])
    with pytest.raises(DataFormatError, match=r"val: unequal sample counts"):
        load_split(broken, "val")


def test_loader_refuses_missing_folder_and_bad_spec(tmp_path, broken):
    with pytest.raises(DataFormatError, match="no such data folder"):
        load_split(tmp_path / "nope", "val")
    spec = json.loads((broken / "spec.json").read_text())
    spec["modalities"]["rgb"]["kind"] = "video"
    (broken / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(DataFormatError, match="kind 'video'; allowed: image, sequence"):
        load_split(broken, "val")


def test_bring_your_own_folder_loads(tmp_path):
    """A hand-made folder in the format (e.g. someone else's tokens) loads without our generator."""
    rng = np.random.default_rng(0)
    (tmp_path / "train").mkdir()
    np.save(tmp_path / "train" / "tok_rgb.npy", rng.integers(0, 64000, (10, 16, 16)))
    np.save(tmp_path / "train" / "scene_desc.npy", rng.integers(0, 500, (10, 40)))
    (tmp_path / "spec.json").write_text(
        json.dumps(
            {
                "modalities": {
                    "tok_rgb": {"kind": "image", "vocab_size": 64000, "grid": [16, 16]},
                    "scene_desc": {"kind": "sequence", "vocab_size": 500, "max_len": 40},
                },
                "splits": {"train": 10},
            }
        )
    )
    data = load_split(tmp_path, "train")
    assert data["tok_rgb"].shape == (10, 256) and data["scene_desc"].shape == (10, 40)


def test_cli_show_writes_a_png_and_bad_override_is_refused(data_root, tmp_path, capsys):
    out = tmp_path / "show.png"
    assert main(["data", "show", f"data.root={data_root[0]}", "--out", str(out), "--scenes", "2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "build", "data.trian_size=5"]) == 2
    err = capsys.readouterr().err
    assert "data.trian_size" in err and "train_size" in err
