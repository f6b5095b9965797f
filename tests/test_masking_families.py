"""Property tests of the masking families (block, aligned, hard), mask_ratio, schedules, T5 spans and MaskStats."""

import math

import numpy as np
import pytest
import torch
from test_masking import IMAGES, SPECS

from model.batch import DecoderInput, Masks
from model.dataset import DatasetSpec, ModalitySpec
from model.mask_figure import masked_scene_figure, planted_hard, preset
from model.mask_stats import MaskStats
from model.masking import build_masking
from model.masking.block import DRAWS, rectangles
from model.masking.schedules import Schedule, parse
from model.masking.spans import random_spans, span_counts, spans_to_t5, t5_to_spans, to_t5
from model.run_folder import RunFolder
from model.scenes import (
    SceneConfig,
    box_vocabulary,
    box_words,
    caption_vocabulary,
    captions,
    max_caption_words,
    render,
)
from model.tokenizers import EOS, FIRST_SENTINEL, NUM_SENTINELS, PAD, WordTokenizer

WORDS = FIRST_SENTINEL + NUM_SENTINELS  # first ordinary word id


def make_tokens(specs, b, seed=0):
    """Random tokens; sequences: random words (no sentinel ids), random length, EOS, PAD."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, s in specs.items():
        t = torch.randint(WORDS if s.kind == "sequence" else 0, s.vocab_size, (b, s.num_tokens), generator=g)
        if s.kind == "sequence":
            length = torch.randint(0, s.max_len, (b, 1), generator=g)
            pos = torch.arange(s.max_len)
            t = torch.where(pos < length, t, torch.where(pos == length, EOS, PAD))
        out[name] = t
    return out


def masks_of(name, specs, tokens, input_budget, target_budget, seed=0, **params):
    strategy = build_masking(name, specs, input_budget, target_budget, params)
    return strategy, strategy(tokens, torch.Generator().manual_seed(seed))


def valid_count(specs, tokens):
    return sum((t != PAD).sum(1) if specs[n].kind == "sequence" else torch.full((len(t),), t.shape[1])
               for n, t in tokens.items())


def test_mask_ratio_below_budget_and_dirichlet():
    tokens = make_tokens(SPECS, 256)
    valid = valid_count(SPECS, tokens)
    _, masks = masks_of("random", SPECS, tokens, 12, 9, mask_ratio=0.15)  # the budget binds
    assert torch.equal(sum(m.input.sum(1) for m in masks.values()), valid.clamp(max=12))
    _, masks = masks_of("dirichlet", SPECS, tokens, 30, 9, mask_ratio=0.85)
    assert (sum(m.input.sum(1) for m in masks.values()) <= torch.floor(0.15 * valid + 0.5)).all()


def test_rectangles_are_the_accepted_blocks():
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 65, (500,), generator=g)
    hidden, blocks, accepted = rectangles((8, 8), counts, 0.3, g)
    painted = torch.zeros(500, 8, 8, dtype=torch.bool)
    for i, k in accepted.nonzero().tolist():
        top, left, height, width = blocks[i, k].tolist()
        assert height >= 1 and width >= 1 and top + height <= 8 and left + width <= 8
        painted[i, top : top + height, left : left + width] = True
    assert torch.equal(painted.flatten(1), hidden)
    assert (hidden.sum(1) <= counts).all()
    # Blocks cover nearly everything; the few cells they leave are topped up at random.
    assert hidden.sum() >= 0.97 * counts.sum()
    assert blocks.shape == (500, DRAWS, 4)


def test_block_masks_are_clustered_and_exact():
    tokens = make_tokens(IMAGES, 400)
    stats = {}
    for name in ("block", "random"):
        _, masks = masks_of(name, IMAGES, tokens, 96, 40)
        assert (sum(m.input.sum(1) for m in masks.values()) == 96).all()
        stats[name] = MaskStats(IMAGES)
        stats[name].update(masks)
    # Half the cells hidden: independent cells give pairs both hidden / pairs any hidden = p / (2 - p) = 1/3.
    assert abs(stats["random"].summary()["a/hidden_clustering"] - 1 / 3) < 0.02
    assert stats["block"].summary()["a/hidden_clustering"] > 0.55


def test_random_spans_exact_runs():
    g = torch.Generator().manual_seed(0)
    length = torch.randint(0, 31, (3000,), generator=g)
    hidden = torch.floor(torch.rand(3000, generator=g) * (length + 1)).long()
    spans = span_counts(hidden, length, 3.0)
    mask = random_spans(length, hidden, spans, 30, g)
    starts = mask & ~torch.nn.functional.pad(mask[:, :-1], (1, 0))
    assert torch.equal(mask.sum(1), hidden)
    assert torch.equal(starts.sum(1), spans)
    assert not (mask & (torch.arange(30) >= length[:, None])).any()
    # Unconstrained rows: the mean span length is the configured one.
    free = (hidden >= 6) & (length - hidden >= hidden)
    assert abs(hidden[free].sum() / spans[free].sum() - 3.0) < 0.15
    # Every layout is equally likely: with 2 of 4 tokens as 1 span, the 3 placements each ~1/3.
    mask = random_spans(torch.full((3000,), 4), torch.full((3000,), 2), torch.ones(3000, dtype=torch.long), 4, g)
    first = mask.long().argmax(1)
    assert all(abs((first == k).float().mean().item() - 1 / 3) < 0.04 for k in range(3))


def test_t5_format_example_and_round_trip():
    a, b, c, d, e, f, h, s0, s1 = 20, 21, 22, 23, 24, 25, 26, FIRST_SENTINEL, FIRST_SENTINEL + 1
    tokens = torch.tensor([[a, b, c, d, e, f, h, EOS, PAD, PAD]])
    hidden = torch.tensor([[0, 0, 1, 1, 0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    inputs, target = spans_to_t5(tokens, hidden)
    assert inputs.tolist() == [[a, b, s0, e, s1, h, EOS, PAD, PAD, PAD]]
    assert target.tolist() == [[s0, c, d, s1, f, PAD, PAD, PAD, PAD, PAD]]
    g = torch.Generator().manual_seed(1)
    tokens = make_tokens({"s": ModalitySpec("s", "sequence", 60, max_len=20)}, 2000)["s"]
    length = (tokens != PAD).sum(1)
    num_hidden = torch.floor(torch.rand(2000, generator=g) * (length + 1)).long().clamp(max=10)
    hidden = random_spans(length, num_hidden, span_counts(num_hidden, length, 2.0), 20, g)
    back_tokens, back_hidden = t5_to_spans(*spans_to_t5(tokens, hidden))
    assert torch.equal(back_tokens, tokens) and torch.equal(back_hidden, hidden)


def test_t5_rejects_what_it_cannot_format():
    tokens = torch.tensor([[20, 21, 22, EOS]])
    with pytest.raises(ValueError, match="does not fit"):
        spans_to_t5(tokens, torch.tensor([[1, 1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="sentinel ids"):
        spans_to_t5(torch.tensor([[FIRST_SENTINEL, EOS]]), torch.tensor([[0, 1]], dtype=torch.bool))


def test_block_t5_targets_are_whole_spans():
    tokens = make_tokens(SPECS, 300)
    _, masks = masks_of("block", SPECS, tokens, 30, 12, sequence_format="t5", mask_ratio=0.5)
    m, valid = masks["caption"], tokens["caption"] != PAD
    both = m.input.any(1) & m.target.any(1)
    assert both.any()
    assert torch.equal(m.target[both], (valid & ~m.input)[both])
    _, dec_tokens, t5_masks = to_t5(SPECS, tokens, masks)
    first = dec_tokens["caption"][t5_masks["caption"].target.any(1), 0]
    assert (first == FIRST_SENTINEL).all()  # every T5 target starts with its first span's sentinel


def test_aligned_hides_the_same_cells():
    tokens = make_tokens(SPECS, 300)
    _, masks = masks_of("aligned", SPECS, tokens, 12, 9, region="blocks")
    assert torch.equal(masks["rgb"].input, masks["depth"].input)
    # ... while targets are drawn independently among the hidden cells.
    assert not torch.equal(masks["rgb"].target, masks["depth"].target)
    _, masks = masks_of("block", SPECS, tokens, 12, 9)
    assert not torch.equal(masks["rgb"].input, masks["depth"].input)


def scene_batch(b):
    """Real scenes: boxes and captions tokenized as the data set does, plus the scenes themselves."""
    cfg = SceneConfig()
    scenes = render(cfg, 0, "val", np.arange(b))
    boxes = WordTokenizer(box_vocabulary(cfg), 5 * cfg.max_objects + 1)
    caption = WordTokenizer(caption_vocabulary(cfg), max_caption_words(cfg) + 1)
    grid = (8, 8)
    specs = {
        "rgb": ModalitySpec("rgb", "image", 16, grid=grid),
        "depth": ModalitySpec("depth", "image", 16, grid=grid),
        "boxes": ModalitySpec("boxes", "sequence", boxes.vocab_size, max_len=boxes.max_len),
        "caption": ModalitySpec("caption", "sequence", caption.vocab_size, max_len=caption.max_len),
    }
    tokens = {
        "rgb": torch.zeros(b, 64, dtype=torch.long),
        "depth": torch.zeros(b, 64, dtype=torch.long),
        "boxes": torch.from_numpy(boxes.encode(box_words(cfg, scenes))),
        "caption": torch.from_numpy(caption.encode(captions(cfg, scenes))),
    }
    return cfg, scenes, specs, tokens, caption


def test_aligned_hides_objects_under_the_hidden_cells():
    cfg, scenes, specs, tokens, caption_tok = scene_batch(200)
    _, masks = masks_of("aligned", specs, tokens, 60, 30, region="blocks", hide_objects=True, mask_ratio=0.5)
    hidden_cells = (~masks["rgb"].input).view(-1, 8, 8)
    words = caption_tok.decode(tokens["caption"].numpy())
    sizes = list(cfg.sizes)
    checked = 0
    for i in range(len(scenes)):
        objs = [k for k in scenes.order()[i] if scenes.present[i, k]]
        for j, k in enumerate(objs):
            x0, y0, x1, y1 = (scenes.box[i, k] // 4).tolist()  # 32-pixel canvas, 8x8 grid
            cover = hidden_cells[i, y0 : y1 + 1, x0 : x1 + 1].float().mean().item()
            if cover < 0.5:
                continue
            checked += 1
            assert not masks["boxes"].input[i, 5 * j : 5 * j + 5].any()
            named = [sizes[scenes.size[i, k]], cfg.colors[scenes.color[i, k]], cfg.shapes[scenes.shape[i, k]]]
            assert words[i][4 * j : 4 * j + 3] == named
            assert not masks["caption"].input[i, 4 * j : 4 * j + 3].any()
            if j < 2 and len(objs) >= 2:  # the relation names objects 0 and 1 again
                at = 4 * len(objs) + (1 if j == 0 else 6)
                assert words[i][at : at + 2] == named[1:]
                assert not masks["caption"].input[i, at : at + 2].any()
    assert checked > 50
    # Without hide_objects, hidden objects' words are often visible.
    _, plain = masks_of("aligned", specs, tokens, 60, 30, region="blocks", mask_ratio=0.5)
    assert plain["boxes"].input.float().mean() > masks["boxes"].input.float().mean() + 0.05


def test_aligned_rejects_tokens_off_the_layout():
    _, _, specs, tokens, _ = scene_batch(8)
    strategy = build_masking("aligned", specs, 60, 30, {"hide_objects": True, "coordinate_bins": 16})
    with pytest.raises(ValueError, match="masking.hide_objects: boxes tokens"):
        strategy(tokens, torch.Generator().manual_seed(0))


def planted(strategy, specs, hard_positions, b=8):
    """Feed ``observe`` a loss map: 5.0 at ``hard_positions`` (flat over sorted modalities), 0.01 elsewhere."""
    n = sum(s.num_tokens for s in specs.values())
    modality = torch.cat([torch.full((s.num_tokens,), i) for i, s in enumerate(specs.values())]).expand(b, -1)
    position = torch.cat([torch.arange(s.num_tokens) for s in specs.values()]).expand(b, -1)
    loss = torch.full((b, n), 0.01)
    loss[:, hard_positions] = 5.0
    zeros = torch.zeros(b, n, dtype=torch.long)
    strategy.observe(DecoderInput(zeros, zeros, modality, position, torch.zeros(b, n, dtype=torch.bool)), loss)


def test_hard_concentrates_targets_where_the_loss_is_high():
    specs = {n: SPECS[n] for n in ("depth", "rgb")}  # sorted: depth 0..15, rgb 16..31
    hard_cells = torch.arange(16, 20)  # rgb's first row: 4 of 32 positions
    tokens = make_tokens(specs, 4000)
    strategy = build_masking("hard", specs, 8, 8, {"random_fraction": {"schedule": "linear", "start": 1.0, "end": 0.5}})
    planted(strategy, specs, hard_cells)
    for step, fraction in ((0, 1.0), (100, 0.5)):
        strategy.set_progress(step, 100)
        assert strategy.params.random_fraction == fraction
        masks = strategy(tokens, torch.Generator().manual_seed(0))
        target = torch.cat([masks[n].target for n in specs], 1)
        on_hard = target[:, hard_cells].sum(1).float().mean().item()
        # Hard targets land on the 4 hard cells; random ones are uniform over the cells not yet chosen.
        num_random = round(8 * fraction)
        num_hard = 8 - num_random
        assert abs(on_hard - (num_hard + num_random * (4 - num_hard) / (32 - num_hard))) < 0.15
        # The random fraction still reaches everywhere else, every other cell equally often.
        elsewhere = target[:, ~torch.isin(torch.arange(32), hard_cells)].float().mean(0)
        assert (elsewhere - (8 - on_hard) / 28).abs().max() < 0.03
        assert (sum(m.input.sum(1) for m in masks.values()) == 8).all()


def test_hard_state_round_trip_and_ema():
    specs = {"rgb": SPECS["rgb"]}
    a = build_masking("hard", specs, 4, 4, {"decay": 0.5})
    planted(a, specs, torch.arange(2))
    planted(a, specs, torch.arange(0))  # now every loss is 0.01: EMA of 5.0 and 0.01 at positions 0, 1
    assert torch.allclose(a.loss_ema[:2], torch.tensor(2.505, dtype=torch.float64))
    b = build_masking("hard", specs, 4, 4, {"decay": 0.5})
    b.load_state_dict(a.state_dict())
    tokens = make_tokens(specs, 16)
    ma, mb = (s(tokens, torch.Generator().manual_seed(3)) for s in (a, b))
    assert torch.equal(ma["rgb"].target, mb["rgb"].target)
    with pytest.raises(ValueError, match="keeps no state"):
        build_masking("random", specs, 4, 4).load_state_dict(a.state_dict())
    assert build_masking("block", specs, 4, 4).state_dict() == {}


def test_schedule_values():
    assert Schedule("linear", 1.0, 0.5)(0, 100) == 1.0
    assert Schedule("linear", 1.0, 0.5)(50, 100) == 0.75
    assert Schedule("linear", 1.0, 0.5)(100, 100) == 0.5
    assert Schedule("linear", 1.0, 0.5)(150, 100) == 0.5
    assert Schedule("cosine", 0.0, 1.0)(50, 100) == pytest.approx(0.5)
    assert Schedule("cosine", 0.0, 1.0)(25, 100) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    assert Schedule("constant", 0.3, 0.3)(77, 100) == 0.3
    warm = parse("masking.x", {"schedule": "linear", "start": 0.0, "end": 1.0, "warmup": 20})
    assert [warm(s, 120) for s in (0, 20, 70, 120)] == [0.0, 0.0, 0.5, 1.0]


def test_scheduled_parameters_resolve_at_set_progress():
    tokens = make_tokens(SPECS, 64)
    total = sum(s.num_tokens for s in SPECS.values())
    strategy = build_masking("block", SPECS, total, 9, {"mask_ratio": {"schedule": "linear", "start": 0.0, "end": 1.0}})
    valid = valid_count(SPECS, tokens)
    for step, ratio in ((0, 0.0), (25, 0.25), (100, 1.0)):
        strategy.set_progress(step, 100)
        masks = strategy(tokens, torch.Generator())
        assert torch.equal(sum(m.input.sum(1) for m in masks.values()), torch.floor((1 - ratio) * valid + 0.5).long())
    # Inside mappings too: a Dirichlet alpha that fades rgb out of the inputs.
    alphas = {"rgb": {"schedule": "cosine", "start": 1.0, "end": 0.0}, "depth": 1.0, "caption": 1.0}
    strategy = build_masking("dirichlet", SPECS, 12, 9, {"input_alphas": alphas})
    strategy.set_progress(100, 100)
    assert not strategy(tokens, torch.Generator())["rgb"].input.any()
    strategy.set_progress(0, 100)
    assert strategy(tokens, torch.Generator())["rgb"].input.any()


def test_aligned_needs_one_grid():
    specs = {**IMAGES, "small": ModalitySpec("small", "image", 8, grid=(4, 4))}
    with pytest.raises(ValueError, match="aligned modalities need one grid shape"):
        build_masking("aligned", specs, 12, 12)
    strategy = build_masking("aligned", specs, 12, 12, {"modalities": ["a", "b"]})
    masks = strategy(make_tokens(specs, 8), torch.Generator())
    assert torch.equal(masks["a"].input, masks["b"].input)


def test_mask_stats_by_hand(tmp_path):
    specs = {"img": ModalitySpec("img", "image", 8, grid=(2, 2)), "seq": ModalitySpec("seq", "sequence", 30, max_len=3)}
    t, f = True, False
    masks = {
        "img": Masks(torch.tensor([[t, t, f, f], [f, f, f, f]]), torch.tensor([[f, f, t, f], [t, t, t, t]])),
        "seq": Masks(torch.tensor([[t, f, f], [t, t, f]]), torch.tensor([[f, f, f], [f, f, t]])),
    }
    stats = MaskStats(specs)
    stats.update(masks)
    s = stats.summary()
    assert s["img/input_mean"] == 1.0 and s["img/input_std"] == 1.0 and s["img/input_present"] == 0.5
    assert s["img/target_mean"] == 2.5 and s["img/target_std"] == 1.5 and s["img/target_present"] == 1.0
    assert s["seq/input_mean"] == 1.5 and s["seq/target_present"] == 0.5
    assert s["total/input_mean"] == 2.5 and s["total/input_std"] == 0.5
    assert s["total/target_mean"] == 3.0 and s["total/target_std"] == 2.0
    # img input used positions 0 and 1 once each of 4: entropy log 2 / log 4; targets 1, 1, 2, 1 of 5.
    assert s["img/input_spread"] == pytest.approx(0.5)
    p = torch.tensor([0.2, 0.2, 0.4, 0.2])
    assert s["img/target_spread"] == pytest.approx(float(-(p * p.log()).sum() / math.log(4)))
    assert s["seq/target_spread"] == 0.0  # always the same position
    # Hidden (non-input) cells: row 0 hides [2, 3] (one pair, both hidden; two pairs with one), row 1 all.
    # Pairs per sample: (0,1), (2,3) horizontal, (0,2), (1,3) vertical.
    assert s["img/hidden_clustering"] == pytest.approx((1 + 4) / (3 + 4))
    paths = stats.figures(RunFolder(tmp_path))
    assert [p.name for p in paths] == ["mask_budgets.png", "mask_frequency.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_mask_stats_agreement():
    stats = MaskStats(IMAGES)
    tokens = make_tokens(IMAGES, 64)
    stats.update(build_masking("aligned", IMAGES, 60, 30)(tokens, torch.Generator()))
    assert stats.summary()["a:b:c/hidden_agreement"] == 1.0


def test_masked_scene_figure_on_real_data(data_root, tmp_path):
    root, _ = data_root
    hard = planted_hard(DatasetSpec.load(root).modalities)
    out = masked_scene_figure(root, {"dense": preset("dense"), "hard": hard}, tmp_path / "families.png")
    assert out.stat().st_size > 10_000
