import pytest
import torch
from test_masking import SPECS, make_tokens

from model.generate import generate, pack_present
from model.network import MODEL_PRESETS, FourM
from model.tokenizers import EOS, FIRST_SENTINEL, NUM_SENTINELS, PAD, UNK

B = 6
NEVER_IN_SEQUENCE = [PAD, UNK, *range(FIRST_SENTINEL, FIRST_SENTINEL + NUM_SENTINELS)]


def model(eos_bias: float = 0.0) -> FourM:
    torch.manual_seed(0)
    net = FourM(MODEL_PRESETS["tiny"], SPECS).eval()
    with torch.no_grad():
        net.out["caption"].bias[EOS] += eos_bias  # makes rows end at different lengths when sampling
    return net


def check_sequence(ids: torch.Tensor, conf: torch.Tensor) -> None:
    """Exactly one EOS per row, valid words before it, PAD (confidence 0) after it."""
    is_eos = ids == EOS
    assert torch.equal(is_eos.sum(1), torch.ones(len(ids), dtype=torch.long))
    pos = torch.arange(ids.shape[1])
    eos_at = is_eos.long().argmax(1, keepdim=True)
    before, after = pos < eos_at, pos > eos_at
    assert not torch.isin(ids[before], torch.tensor(NEVER_IN_SEQUENCE)).any()
    assert (ids[after] == PAD).all() and (conf[after] == 0).all()
    assert ((conf[~after] > 0) & (conf[~after] <= 1)).all()


@pytest.mark.parametrize("temperature,eos_bias", [(0.0, 0.0), (1.0, 3.0)])
def test_every_target_slot_gets_a_valid_token(temperature, eos_bias):
    given = {"caption": make_tokens(SPECS, B)["caption"]}
    g = torch.Generator().manual_seed(0)
    out = generate(model(eos_bias), SPECS, given, ["rgb", "depth"], g, steps=3, temperature=temperature)
    for name in ("rgb", "depth"):
        ids, conf = out.tokens[name], out.confidence[name]
        assert ids.shape == conf.shape == (B, SPECS[name].num_tokens)
        assert ids.min() >= 0 and ids.max() < SPECS[name].vocab_size
        assert ((conf > 0) & (conf <= 1)).all()
    out = generate(model(eos_bias), SPECS, {"rgb": out.tokens["rgb"]}, ["caption"], g, temperature=temperature)
    check_sequence(out.tokens["caption"], out.confidence["caption"])
    if eos_bias:
        assert len(set((out.tokens["caption"] == EOS).long().argmax(1).tolist())) > 1  # rows of different lengths


def test_same_generator_seed_same_generation():
    given = {"rgb": make_tokens(SPECS, B)["rgb"]}
    runs = [
        generate(model(2.0), SPECS, given, ["depth", "caption"], torch.Generator().manual_seed(3), temperature=1.0)
        for _ in range(2)
    ]
    for name in ("depth", "caption"):
        assert torch.equal(runs[0].tokens[name], runs[1].tokens[name])


def test_one_step_equals_direct_masked_prediction():
    tokens = make_tokens(SPECS, B)
    net = model()
    out = generate(net, SPECS, {"rgb": tokens["rgb"]}, ["depth"], torch.Generator().manual_seed(0), steps=1)
    everything = torch.ones_like(tokens["depth"], dtype=torch.bool)
    enc, dec = pack_present(SPECS, {"rgb": tokens["rgb"]}, {"rgb": everything}, {"depth": everything})
    assert torch.equal(out.tokens["depth"], net.logits(enc, dec, "depth").argmax(-1))


def test_autoregressive_matches_naive_decoding():
    """Reusing encoder features and dropping finished rows changes nothing against re-running everything."""
    tokens = make_tokens(SPECS, B)
    net = model(eos_bias=1.5)
    given = {"rgb": tokens["rgb"]}
    out = generate(net, SPECS, given, ["caption"], torch.Generator().manual_seed(0))
    length = SPECS["caption"].max_len
    ids = torch.full((B, length), PAD)
    for t in range(length):
        upto = (torch.arange(length) <= t).expand(B, -1)
        enc, dec = pack_present(SPECS, {**given, "caption": ids}, {"rgb": torch.ones(B, 16, dtype=torch.bool)},
                                {"caption": upto})
        logits = net.logits(enc, dec, "caption")[:, t]
        logits[:, NEVER_IN_SEQUENCE] = float("-inf")
        ids[:, t] = logits.argmax(-1)
    ended = (ids == EOS).long().cumsum(1)
    ids = ids.masked_fill((ended - (ids == EOS).long()) > 0, PAD)  # PAD after the first EOS
    has_eos = (ids == EOS).any(1)
    assert torch.equal(out.tokens["caption"][has_eos], ids[has_eos])
    assert has_eos.any()


def test_chaining_feeds_each_generated_modality_to_the_next():
    tokens = make_tokens(SPECS, B)
    net = model()
    given = {"rgb": tokens["rgb"]}
    g = torch.Generator().manual_seed(5)
    chained = generate(net, SPECS, given, ["depth", "caption"], g)
    g = torch.Generator().manual_seed(5)
    depth = generate(net, SPECS, given, ["depth"], g).tokens["depth"]
    by_hand = generate(net, SPECS, {**given, "depth": depth}, ["caption"], g).tokens["caption"]
    assert torch.equal(chained.tokens["depth"], depth)
    assert torch.equal(chained.tokens["caption"], by_hand)
    # The generated depth really is an input: without it the caption model sees something else.
    alone = generate(net, SPECS, given, ["caption"], g).confidence["caption"]
    assert not torch.allclose(chained.confidence["caption"], alone)


def test_inpainting_keeps_known_positions():
    tokens = make_tokens(SPECS, B)
    known = torch.rand(B, 16, generator=torch.Generator().manual_seed(1)) < 0.5
    out = generate(model(), SPECS, {"rgb": tokens["rgb"]}, ["rgb"], torch.Generator().manual_seed(0),
                   steps=2, known={"rgb": known})
    assert torch.equal(out.tokens["rgb"][known], tokens["rgb"][known])
    assert (out.confidence["rgb"][known] == 1).all() and (out.confidence["rgb"][~known] < 1).all()


@pytest.mark.parametrize("given,targets,kwargs,message", [
    ({}, ["rgb"], {}, "nothing given"),
    ({"rgb": None}, ["normals"], {}, "unknown modality 'normals'"),
    ({"rgb": None}, ["depth", "depth"], {}, "duplicate targets"),
    ({"rgb": None}, ["rgb"], {}, "both given and a target"),
    ({"rgb": None}, ["depth"], {"steps": 0}, "steps=0"),
])
def test_bad_requests_are_refused(given, targets, kwargs, message):
    given = {n: make_tokens(SPECS, B)[n] for n in given}
    with pytest.raises(ValueError, match=message):
        generate(model(), SPECS, given, targets, torch.Generator(), **kwargs)


def test_the_generate_command_draws_a_trained_run_s_generations_and_names_a_modality_it_lacks(finished_study, tmp_path,
                                                                                           capsys):
    from ablate.cli import main
    from ablate.study_file import load_study

    run = load_study(finished_study).runs[0].out_dir
    out = tmp_path / "generation.png"
    assert main(["generate", str(run), "--targets", "semseg", "caption", "--scenes", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}" and out.read_bytes().startswith(b"\x89PNG")
    assert main(["generate", str(run), "--targets", "normals", "--out", str(tmp_path / "no.png")]) == 2
    assert "unknown modality ['normals']; the run's data set has" in capsys.readouterr().err
    assert not (tmp_path / "no.png").exists()
