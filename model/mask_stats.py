"""Statistics of the masks a run actually realized, so a report can show that strategies differ.

    stats = MaskStats(specs)
    stats.update(masks)          # every step (or every k-th), modality -> Masks [B, N_m]
    stats.summary()              # flat floats
    stats.metrics()              # the same, named as a run logs them: masks/<key>
    stats.figures(out_dir)       # PNGs for MLflow artifacts

Accumulated per modality: a histogram of the per-sample input and target counts (0..N_m) and
how often each position was an input or a target; for image grids, how clustered the hidden
(non-input) cells are and, across image modalities of one grid, how often they agree. Updates
are a few tensor reductions per modality.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from model.batch import Masks
from model.dataset import ModalitySpec
from model.run_folder import RunFolder

ROLES = ("input", "target")


class MaskStats:
    PREFIX = "masks/"  # a run logs ``summary()[key]`` as the metric ``masks/<key>``

    @classmethod
    def names(cls, specs: dict[str, ModalitySpec]) -> list[str]:
        """The metric names ``metrics`` returns for these modalities (the same at every step)."""
        return list(cls(specs).metrics())

    def __init__(self, specs: dict[str, ModalitySpec]):
        self.specs = {n: specs[n] for n in sorted(specs)}
        self.samples = 0
        total = sum(s.num_tokens for s in self.specs.values())
        # counts[role][name]: int64 [N_m + 1] samples with k tokens; "total" over all modalities.
        self.counts = {r: {n: torch.zeros(s.num_tokens + 1, dtype=torch.long) for n, s in self.specs.items()}
                       for r in ROLES}
        for r in ROLES:
            self.counts[r]["total"] = torch.zeros(total + 1, dtype=torch.long)
        # frequency[role][name]: int64 [N_m] samples in which each position had that role.
        self.frequency = {r: {n: torch.zeros(s.num_tokens, dtype=torch.long) for n, s in self.specs.items()}
                          for r in ROLES}
        # Image grids: [adjacent cell pairs both hidden, pairs with at least one hidden].
        self.pairs = {n: torch.zeros(2, dtype=torch.long) for n, s in self.specs.items() if s.kind == "image"}
        # Image modalities sharing a grid: [(sample, cell)s hidden in all or in none, all (sample, cell)s].
        grids: dict[tuple[int, int], list[str]] = {}
        for n in self.pairs:
            grids.setdefault(tuple(self.specs[n].grid), []).append(n)
        self.agreement = {":".join(g): torch.zeros(2, dtype=torch.long) for g in grids.values() if len(g) > 1}

    def update(self, masks: dict[str, Masks]) -> None:
        """Add one batch: modality -> Masks of bool [B, N_m] (every modality of ``specs``)."""
        totals = dict.fromkeys(ROLES, 0)
        for name in self.specs:
            for role, mask in zip(ROLES, masks[name]):
                mask = mask.detach().cpu()
                per_sample = mask.sum(1)
                totals[role] = totals[role] + per_sample
                self.counts[role][name] += torch.bincount(per_sample, minlength=self.specs[name].num_tokens + 1)
                self.frequency[role][name] += mask.sum(0)
        for role in ROLES:
            self.counts[role]["total"] += torch.bincount(totals[role], minlength=len(self.counts[role]["total"]))
        hidden = {n: ~masks[n].input.detach().cpu().view(-1, *self.specs[n].grid) for n in self.pairs}
        for name, h in hidden.items():
            for a, b in ((h[:, 1:], h[:, :-1]), (h[:, :, 1:], h[:, :, :-1])):
                self.pairs[name] += torch.stack([(a & b).sum(), (a | b).sum()])
        for group in self.agreement:
            stack = torch.stack([hidden[n] for n in group.split(":")])
            self.agreement[group] += torch.tensor([(stack.all(0) | ~stack.any(0)).sum(), stack[0].numel()])
        self.samples += masks[next(iter(self.specs))].input.shape[0]

    def state_dict(self) -> dict:
        """Everything accumulated, so a resumed run's statistics cover all its steps (Accelerate checkpoints it)."""
        return {"samples": self.samples, "counts": self.counts, "frequency": self.frequency, "pairs": self.pairs,
                "agreement": self.agreement}

    def load_state_dict(self, state: dict) -> None:
        self.samples = int(state["samples"])
        self.counts, self.frequency = state["counts"], state["frequency"]
        self.pairs = state["pairs"]
        self.agreement = {k.replace("+", ":"): v for k, v in state["agreement"].items()}  # older checkpoints: a+b

    def summary(self) -> dict[str, float]:
        """Per modality (and ``total``) and role: ``{name}/{role}_mean`` and ``_std`` (tokens per sample),
        ``_present`` (fraction of samples with at least one); per modality ``_spread``: the entropy of
        the position-frequency map over log(N_m), 1 when every position is chosen equally often, 0
        when always the same one (and 0 when none ever is). Image modalities: ``{name}/hidden_clustering``,
        adjacent cell pairs both hidden over pairs with at least one hidden (p / (2 - p) for independent
        cells hidden with probability p, higher for blocks); per image grid shared by several modalities,
        ``{a:b:c}/hidden_agreement``, the fraction of cells hidden in all or in none of them (1 for
        ``aligned``)."""
        out = {}
        for name, (both, either) in self.pairs.items():
            out[f"{name}/hidden_clustering"] = float(both) / max(float(either), 1.0)
        for group, (agree, cells) in self.agreement.items():
            out[f"{group}/hidden_agreement"] = float(agree) / max(float(cells), 1.0)
        for role in ROLES:
            for name, hist in self.counts[role].items():
                k = torch.arange(len(hist), dtype=torch.float64)
                p = hist.double() / max(self.samples, 1)
                mean = float((p * k).sum())
                out[f"{name}/{role}_mean"] = mean
                out[f"{name}/{role}_std"] = math.sqrt(max(float((p * k * k).sum()) - mean * mean, 0.0))
                out[f"{name}/{role}_present"] = float(1.0 - p[0]) if self.samples else 0.0
            for name, freq in self.frequency[role].items():
                out[f"{name}/{role}_spread"] = _spread(freq)
        return out

    def metrics(self) -> dict[str, float]:
        """``summary`` named as a run logs it: ``masks/<key>`` (``masks/rgb/input_mean``)."""
        return {self.PREFIX + k: v for k, v in self.summary().items()}

    def figures(self, folder: RunFolder) -> list[Path]:
        """Write the run folder's mask budgets (per-sample count histograms) and mask frequency (how often
        each position is an input or a target: image grids as grids, sequences as one row); returns their
        paths."""
        folder.masks.mkdir(parents=True, exist_ok=True)
        return [self._budget_figure(folder.mask_budgets), self._frequency_figure(folder.mask_frequency)]

    def _budget_figure(self, path: Path) -> Path:
        names = [*self.specs, "total"]
        cols = min(3, len(names))
        rows = -(-len(names) // cols)
        width, height = 3.4 * cols, 2.6 * rows
        fig = Figure(figsize=(width, height))
        axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=_margins(width, height, 0.65, 0.1, 0.5, 0.3,
                                                                           wspace=0.3, hspace=0.5)).flatten()
        for ax in axes[len(names):]:
            ax.set_axis_off()
        for ax, name in zip(axes, names):
            for role, color in zip(ROLES, ("tab:blue", "tab:red")):
                hist = self.counts[role][name].numpy() / max(self.samples, 1)
                ax.step(np.arange(len(hist)), hist, where="mid", color=color, label=role)
            ax.set_title(name)
            ax.set_xlabel("tokens per sample")
        fig.axes[0].set_ylabel("fraction of samples")
        fig.axes[0].legend()
        fig.savefig(path, dpi=100)
        return path

    def _frequency_figure(self, path: Path) -> Path:
        names = list(self.specs)
        width, height = 2.6 * len(names), 4.6
        fig = Figure(figsize=(width, height))
        axes = fig.subplots(len(ROLES), len(names), squeeze=False,
                            gridspec_kw=_margins(width, height, 0.05, 1.1, 0.05, 0.3, wspace=0.08, hspace=0.15))
        for row, role in enumerate(ROLES):
            for ax, name in zip(axes[row], names):
                spec = self.specs[name]
                freq = self.frequency[role][name].numpy() / max(self.samples, 1)
                grid = spec.kind == "image"
                shape = tuple(spec.grid) if grid else (1, spec.num_tokens)
                # A sequence is one row of cells stretched to the panel's height.
                aspect = "equal" if grid else "auto"
                image = ax.imshow(freq.reshape(shape), vmin=0.0, vmax=1.0, cmap="magma", aspect=aspect)
                ax.set_title(f"{name} {role}", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
        bar = fig.add_axes((1 - 0.85 / width, 0.15, 0.15 / width, 0.7))
        fig.colorbar(image, cax=bar, label="fraction of samples")
        fig.savefig(path, dpi=100)
        return path


def _margins(width: float, height: float, left: float, right: float, bottom: float, top: float,
             **spacing: float) -> dict[str, float]:
    """Subplot margins given in inches, as fractions of a ``width`` x ``height`` figure (fixed margins instead of
    a layout engine, which costs about half of drawing these figures)."""
    return {"left": left / width, "right": 1 - right / width, "bottom": bottom / height, "top": 1 - top / height,
            **spacing}


def _spread(freq: torch.Tensor) -> float:
    """Normalized entropy of a frequency map: int64 [N] -> float in [0, 1]."""
    total = float(freq.sum())
    if total == 0 or len(freq) < 2:
        return 0.0 if total == 0 else 1.0
    p = freq.double() / total
    return float(-(p * torch.log(p.clamp(min=1e-300))).sum() / math.log(len(freq)))
