"""The 4M encoder-decoder (arXiv 2312.06647, ``fourm/models/fm.py``) at nano scale.

Encoder input: token embedding + modality embedding + fixed sin-cos position (2D for image
grids, 1D for sequences). Decoder input: a learned mask token (images) or the embedded
previous target token (sequences, teacher forcing) + the same modality and position
embeddings. As in 4M, the cross-attention context is a projection of the encoder output
plus the encoder's modality and position embeddings, so the decoder knows where each
context token came from. Pre-LayerNorm blocks with ``scaled_dot_product_attention``.

Attention: pad slots are never keys; decoder self-attention stays within a modality and is
causal (by position) for sequences. Rows with no key at all (a fully padded sample) attend
to everything and are then zeroed, so they contribute nothing and produce no NaN.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.batch import DecoderInput, EncoderInput
from model.config import MODEL_PRESETS, ModelConfig  # noqa: F401 (the network's settings, re-exported)
from model.dataset import ModalitySpec


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Transformer sin-cos embedding: float [N] -> [N, dim] (dim even)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """MAE's 2D sin-cos embedding, half the channels per axis: -> [h * w, dim] in row-major order."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, rows.flatten()), sincos_1d(dim // 2, cols.flatten())], dim=1)


def with_guard(mask: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [B, 1, Lq, Lk] (True = may attend), optional float bias [B, H, Lq, Lk]
    -> (mask for SDPA: the bool mask, or the bias with -inf where not allowed; has_key [B, 1, Lq, 1]).

    A row with no key would be softmax over nothing (NaN); it attends everywhere instead
    and its output is multiplied by has_key = 0.
    """
    has_key = mask.any(-1, keepdim=True)
    mask = mask | ~has_key
    return (mask if bias is None else bias.masked_fill(~mask, float("-inf"))), has_key


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What SDPA computes but does not return: q [B, H, Lq, d], k [B, H, Lk, d], mask from ``with_guard``
    -> softmax(q k^T / sqrt(d) + bias) over allowed keys, [B, H, Lq, Lk]."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return (scores + mask).softmax(-1)


class GridBias(nn.Module):
    """Relative position bias between image tokens: one number per head and 2D cell offset, added to the
    attention scores; 0 for pairs with a sequence token.

    The image modalities of a scene share one grid, so the semseg token at cell (r, c) is mostly
    about the rgb token at (r, c) and its neighbours. Through sin-cos positions alone the model needs
    hundreds of steps to find that (it predicts the marginal meanwhile); a bias that starts as ALiBi in
    2D (head h: -slope_h * distance, slopes from 2 down to nearly 0) gives it from the first step.
    ``learned``: one trainable table per kind of attention (encoder self, decoder self, cross), shared by
    its layers (BEiT, Swin); else the ALiBi values, fixed.
    bias: int64 modality and position of queries [B, Lq] and keys [B, Lk] -> float [B, H, Lq, Lk].
    """

    KINDS = ("encoder", "decoder", "cross")

    def __init__(self, heads: int, specs: list[ModalitySpec], learned: bool = True):
        super().__init__()
        grids = [m.grid for m in specs if m.kind == "image"]
        self.size = max((max(g) for g in grids), default=1)  # offsets in -(size-1)..size-1 per axis
        offsets = torch.arange(1 - self.size, self.size, dtype=torch.float32)
        distance = (offsets[:, None] ** 2 + offsets[None, :] ** 2).sqrt().flatten()  # [(2 size - 1)^2]
        # ALiBi's idea in 2D: head h starts with a penalty slope_h * distance, from very local to nearly global.
        slopes = 2.0 * 4.0 ** -torch.arange(heads, dtype=torch.float32)
        table = (-slopes[:, None] * distance).expand(len(self.KINDS), -1, -1).clone()
        if learned:
            self.table = nn.Parameter(table)
        else:
            self.register_buffer("table", table, persistent=False)
        self.register_buffer("is_image", torch.tensor([m.kind == "image" for m in specs]), persistent=False)
        self.register_buffer("width", torch.tensor([m.grid[1] if m.kind == "image" else 1 for m in specs]),
                             persistent=False)

    def forward(
        self, kind: str, mod_q: torch.Tensor, pos_q: torch.Tensor, mod_k: torch.Tensor, pos_k: torch.Tensor
    ) -> torch.Tensor:
        """Modality and position int64 [B, Lq] of queries and [B, Lk] of keys -> bias [B, H, Lq, Lk]."""
        wq, wk = self.width[mod_q], self.width[mod_k]
        dr = (pos_q // wq)[:, :, None] - (pos_k // wk)[:, None, :]
        dc = (pos_q % wq)[:, :, None] - (pos_k % wk)[:, None, :]
        span = 2 * self.size - 1
        index = (dr + self.size - 1).clamp(0, span - 1) * span + (dc + self.size - 1).clamp(0, span - 1)
        both = self.is_image[mod_q][:, :, None] & self.is_image[mod_k][:, None, :]
        bias = self.table[self.KINDS.index(kind)][:, index]  # [H, B, Lq, Lk]
        return (bias * both).transpose(0, 1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.resid_drop = nn.Dropout(cfg.dropout)
        # Opt-in (model/attention.py): the next forward also keeps its weights [B, H, Lq, Lk] here.
        self.keep_weights, self.weights = False, None

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x [B, Lq, D], context [B, Lk, D], mask from ``with_guard`` -> [B, Lq, D]."""
        b, lq, d = x.shape
        q = self.q(x).view(b, lq, self.heads, d // self.heads).transpose(1, 2)
        k, v = self.kv(context).view(b, -1, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask, has_key = mask
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        if self.keep_weights:
            self.weights = attention_weights(q, k, attn_mask) * has_key
        y = (y * has_key).transpose(1, 2).reshape(b, lq, d)
        return self.resid_drop(self.proj(y))


class MLP(nn.Sequential):
    def __init__(self, cfg: ModelConfig):
        hidden = int(cfg.dim * cfg.mlp_ratio)
        # tanh GELU: on CPU about 3x cheaper than the exact (erf) one, which took a sixth of a nano step.
        super().__init__(nn.Linear(cfg.dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, cfg.dim),
                         nn.Dropout(cfg.dropout))


class EncoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(cfg.dim, eps=1e-6), Attention(cfg)
        self.norm2, self.mlp = nn.LayerNorm(cfg.dim, eps=1e-6), MLP(cfg)

    def forward(self, x: torch.Tensor, mask: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(cfg.dim, eps=1e-6), Attention(cfg)
        self.norm_query, self.norm_context = nn.LayerNorm(cfg.dim, eps=1e-6), nn.LayerNorm(cfg.dim, eps=1e-6)
        self.cross_attn = Attention(cfg)
        self.norm2, self.mlp = nn.LayerNorm(cfg.dim, eps=1e-6), MLP(cfg)

    def forward(
        self,
        y: torch.Tensor,
        context: torch.Tensor,
        self_mask: tuple[torch.Tensor, torch.Tensor],
        cross_mask: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        h = self.norm1(y)
        y = y + self.self_attn(h, h, self_mask)
        y = y + self.cross_attn(self.norm_query(y), self.norm_context(context), cross_mask)
        return y + self.mlp(self.norm2(y))


class FourM(nn.Module):
    """Encoder-decoder over the modalities in ``specs`` (indexed in sorted name order, as packing does).

    ``codebooks``: image modality -> float [V_m, F_m], what each token id stands for (a patch codebook's
    entries, e.g. 4x4x3 pixels). Where given, a token's encoder embedding is a learned row plus a linear
    map of its standardized entry (``cfg.codebook_input``), and its output logit uses the same kind of
    row (``cfg.codebook_output``): the model starts out knowing which ids look alike, instead of learning
    each of 1,024 ids from the few times it is seen. Without codebooks (bring-your-own tokens) every id
    has an independent learned row.
    """

    def __init__(
        self, cfg: ModelConfig, specs: dict[str, ModalitySpec], codebooks: dict[str, torch.Tensor] | None = None
    ):
        super().__init__()
        self.cfg = cfg.validate()
        self.names = sorted(specs)
        mods = [specs[n] for n in self.names]
        dim = cfg.dim
        codebooks = {n: torch.as_tensor(c, dtype=torch.float32) for n, c in (codebooks or {}).items()}
        for n, c in codebooks.items():
            if n not in specs or specs[n].kind != "image" or c.ndim != 2 or len(c) != specs[n].vocab_size:
                raise ValueError(f"codebook {n!r} of shape {tuple(c.shape)}: need an image modality of specs "
                                 f"and shape [vocab_size, features]")
            self.register_buffer(f"codebook_{n}", (c - c.mean(0)) / c.std().clamp(min=1e-6), persistent=False)
        self.vocab_sizes = [m.vocab_size for m in mods]

        def offsets(sizes: list[int]) -> torch.Tensor:
            return torch.tensor([0, *sizes[:-1]]).cumsum(0)

        # One table per role holding every modality's rows; offset[modality] + id indexes it (one gather).
        self.register_buffer("vocab_offset", offsets([m.vocab_size for m in mods]), persistent=False)
        self.token_emb = nn.Embedding(sum(m.vocab_size for m in mods), dim)
        seq_vocab = [m.vocab_size if m.kind == "sequence" else 0 for m in mods]
        self.register_buffer("seq_vocab_offset", offsets(seq_vocab), persistent=False)
        self.seq_token_emb = nn.Embedding(max(sum(seq_vocab), 1), dim)  # decoder inputs of sequences
        self.register_buffer("is_sequence", torch.tensor([m.kind == "sequence" for m in mods]), persistent=False)
        self.mask_token = nn.Parameter(torch.zeros(dim))  # decoder inputs of images
        self.modality_emb = nn.Embedding(len(mods), dim)  # shared by encoder and decoder
        positions = [sincos_2d(dim, m.grid) if m.kind == "image" else sincos_1d(dim, torch.arange(m.max_len))
                     for m in mods]
        self.register_buffer("position_emb", torch.cat(positions), persistent=False)
        self.register_buffer("position_offset", offsets([m.num_tokens for m in mods]), persistent=False)

        self.grid_bias = None if cfg.grid_bias == "none" else GridBias(cfg.heads, mods, cfg.grid_bias == "learned")
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.enc_depth))
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.context_proj = nn.Linear(dim, dim)
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.dec_depth))
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.out = nn.ModuleDict({n: nn.Linear(dim, specs[n].vocab_size) for n in self.names})

        def entry_maps() -> nn.ModuleDict:
            return nn.ModuleDict({n: nn.Linear(c.shape[1], dim, bias=False) for n, c in codebooks.items()})

        self.codebook_in = entry_maps() if cfg.codebook_input else nn.ModuleDict()
        self.codebook_out = entry_maps() if cfg.codebook_output else nn.ModuleDict()
        self.apply(self._init_weights)
        nn.init.normal_(self.mask_token, std=0.02)
        for layer in self.codebook_out.values():
            nn.init.zeros_(layer.weight)  # heads start as plain learned rows; the shared map is learned

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def _token_table(self) -> torch.Tensor:
        """Encoder embedding of every id of every modality, [sum V_m, D] (rows at ``vocab_offset``)."""
        if not self.codebook_in:
            return self.token_emb.weight
        rows = self.token_emb.weight.split(self.vocab_sizes)
        return torch.cat([
            r + self.codebook_in[n](getattr(self, f"codebook_{n}")) if n in self.codebook_in else r
            for n, r in zip(self.names, rows)
        ])

    def head(self, modality: str, y: torch.Tensor) -> torch.Tensor:
        """``modality``'s output logits of decoder features: [..., D] -> [..., V_m]."""
        out = self.out[modality]
        if modality not in self.codebook_out:
            return out(y)
        weight = out.weight + self.codebook_out[modality](getattr(self, f"codebook_{modality}"))
        return F.linear(y, weight, out.bias)

    def _where(self, modality: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Modality + position embedding: int64 [B, L] each -> [B, L, D]."""
        return self.modality_emb(modality) + self.position_emb[self.position_offset[modality] + position]

    def _guard(
        self, kind: str, queries: EncoderInput | DecoderInput, keys: EncoderInput | DecoderInput, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``with_guard`` of bool ``allowed`` [B, Lq, Lk], with the grid bias of this kind of attention."""
        if self.grid_bias is None:
            return with_guard(allowed[:, None])
        bias = self.grid_bias(kind, queries.modality, queries.position, keys.modality, keys.position)
        return with_guard(allowed[:, None], bias)

    def _encoder_input(self, enc: EncoderInput) -> tuple[EncoderInput, torch.Tensor]:
        """Pad slots zeroed (any ids are then safe to index with) and their modality + position embedding."""
        enc = EncoderInput(*(t.masked_fill(enc.pad, 0) for t in enc[:3]), enc.pad)
        return enc, self._where(enc.modality, enc.position)

    def encode(self, enc: EncoderInput) -> torch.Tensor:
        """Encoder features [B, Le, D] (after the final norm); pad slots carry no meaning."""
        enc, where = self._encoder_input(enc)
        x = self.drop(F.embedding(self.vocab_offset[enc.modality] + enc.tokens, self._token_table()) + where)
        mask = self._guard("encoder", enc, enc, ~enc.pad[:, None, :].expand(-1, enc.pad.shape[1], -1))
        for block in self.encoder:
            x = block(x, mask)
        return self.encoder_norm(x)

    def decode(self, enc: EncoderInput, dec: DecoderInput, features: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder features [B, Ld, D]. Pass ``features = encode(enc)`` to reuse the encoder across calls."""
        if features is None:
            features = self.encode(enc)
        _, enc_where = self._encoder_input(enc)
        context = self.context_proj(features) + enc_where
        dec = DecoderInput(*(t.masked_fill(dec.pad, 0) for t in dec[:4]), dec.pad)
        sequence = self.is_sequence[dec.modality]  # [B, Ld]
        seq_ids = torch.where(sequence, self.seq_vocab_offset[dec.modality] + dec.tokens, 0)
        y = torch.where(sequence[..., None], self.seq_token_emb(seq_ids), self.mask_token)
        y = self.drop(y + self._where(dec.modality, dec.position))

        ld = dec.pad.shape[1]
        same = dec.modality[:, :, None] == dec.modality[:, None, :]
        causal = dec.position[:, None, :] <= dec.position[:, :, None]
        self_mask = same & ~dec.pad[:, None, :] & (causal | ~sequence[:, :, None])
        self_mask = self._guard("decoder", dec, dec, self_mask)
        cross_mask = self._guard("cross", dec, enc, ~enc.pad[:, None, :].expand(-1, ld, -1))
        for block in self.decoder:
            y = block(y, context, self_mask, cross_mask)
        return self.decoder_norm(y)

    def compile_trunk(self) -> None:
        """``torch.compile`` ``decode`` (with ``encode``: embeddings, attention masks and biases, both stacks) as one
        graph: its shapes are the budgets', static. The heads stay eager: ``forward`` sizes each modality's slots
        by counts read from the device, a shape that depends on the data."""
        self.decode = torch.compile(self.decode, fullgraph=True)

    def logits(
        self, enc: EncoderInput, dec: DecoderInput, modality: str, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``modality``'s head on every decoder slot: [B, Ld, V_m] (for generation; ignore other slots)."""
        return self.head(modality, self.decode(enc, dec, features))

    def forward(self, enc: EncoderInput, dec: DecoderInput) -> dict[str, torch.Tensor]:
        """Logits per modality [K_m, V_m] for its non-pad decoder slots, in the order of
        ``dec.target[(dec.modality == i) & ~dec.pad]`` (i = index in sorted names); K_m may be 0."""
        y = self.decode(enc, dec).flatten(0, 1)
        # The counts K_m are the one host sync of a step (a boolean index per modality would be one each).
        counts = torch.zeros(len(self.names), dtype=torch.long, device=y.device)
        counts = counts.scatter_add_(0, dec.modality.flatten(), (~dec.pad).flatten().long()).tolist()
        picked = y[self._target_slots(dec)[: sum(counts)]].split(counts)
        return {n: self.head(n, p) for n, p in zip(self.names, picked)}

    def _target_slots(self, dec: DecoderInput) -> torch.Tensor:
        """Flat indices into [B * Ld] of the non-pad decoder slots, by modality and then in row-major order (as
        ``forward`` lists them), pad slots last: int64 [B * Ld]."""
        key = torch.where(dec.pad, len(self.names), dec.modality).flatten()
        return torch.argsort(key, stable=True)

    def loss(self, enc: EncoderInput, dec: DecoderInput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Cross-entropy over non-pad target slots -> (total, {modality: mean loss} for modalities present)."""
        return self.loss_from(self(enc, dec), dec)[:2]

    def loss_from(
        self, logits: dict[str, torch.Tensor], dec: DecoderInput
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The loss of ``forward``'s logits. Separate so that a DDP-wrapped model's forward can be used.

        Returns (total, {modality: mean loss} for modalities present, per-slot loss [B, Ld] with 0 in pad
        slots, for adaptive masking). ``mod`` weighting: mean of the per-modality means over modalities
        present in the batch; ``token``: mean over all target tokens. 0 (with a graph) when there is no target.
        """
        counts = [len(logits[n]) for n in self.names]  # shapes known on the host: no sync
        slots = self._target_slots(dec)[: sum(counts)]
        sums, per_slot = [], []
        for n, target in zip(self.names, dec.target.flatten()[slots].split(counts)):
            losses = F.cross_entropy(logits[n].float(), target, reduction="none")
            per_slot.append(losses.detach())
            sums.append(losses.sum())
        token_loss = torch.zeros(dec.target.numel(), dtype=torch.float32, device=dec.target.device)
        token_loss = token_loss.index_put_((slots,), torch.cat(per_slot)).view_as(dec.target)
        means = {n: s / c for n, s, c in zip(self.names, sums, counts) if c > 0}
        if self.cfg.loss_weighting == "mod":
            total = sum(means.values()) / len(means) if means else sums[0] * 0.0
        else:
            total = sum(sums) / max(sum(counts), 1)
        return total, means, token_loss
