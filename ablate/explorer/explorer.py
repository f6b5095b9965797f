"""The explorer's state: a study's best model per masking, loaded once, and the questions the page asks of them.

Every method takes a validated request (``requests.py``), checks what needs the study, and
returns JSON-ready values; a question the study cannot answer raises ``ExploreError`` (a 422).
Models are used by one request at a time (attention recording sets a flag on a layer).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch

from ablate.explorer import draw
from ablate.explorer.checkpoints import Strategy, load_strategies, objective
from ablate.explorer.features import ATTRIBUTES, FRAME, Aligned, align, attribute_labels
from ablate.explorer.predict import ANSWERS_KEPT, Answers, Query, predict, rounded
from ablate.explorer.recent import Recent
from ablate.explorer.requests import FeaturesRequest, PredictRequest, SceneRequest
from ablate.explorer.scenes import Scene, SceneError, SceneSource
from ablate.explorer.uploads import FORMATS, MAX_BYTES, UploadError, Uploads, read_image, upload_id, upload_rule
from ablate.schema import StudyError
from ablate.study import Study
from model.attention import layer_index
from model.evaluate import decode_tokens, encoder_features
from model.scenes import render

FEATURE_SCENES = 300  # held-out scenes in the feature projection
REPORT_SUFFIXES = (".md", ".png", ".tex", ".pdf", ".svg", ".csv")


class ExploreError(ValueError):
    """A request the study cannot answer; the message says what is allowed."""


class Explorer:
    def __init__(self, study: Study, reports: Path | str = "reports"):
        self.study = study
        self.strategies: dict[str, Strategy] = load_strategies(study)
        first = next(iter(self.strategies.values()))
        self.specs = first.specs
        try:
            self.source = SceneSource(first.cfg.data.root)
        except SceneError as e:
            raise StudyError(f"{study.path}: {e}") from None
        self.report_dir = (Path(reports) / study.name).resolve()
        grids = {s.grid for s in self.specs.values() if s.kind == "image"}
        self.paint_grid: tuple[int, int] | None = next(iter(grids)) if len(grids) == 1 else None
        self.lock = threading.Lock()
        self._frame: dict[str, tuple[Aligned, torch.Tensor]] = {}  # masking -> (its projection, points [N, 2])
        self.uploads = Uploads()
        self.answers: Answers = Recent(ANSWERS_KEPT)
        num = min(FEATURE_SCENES, self.source.num_heldout)
        self.feature_scenes = render(self.source.cfg, self.source.data_seed, "val", np.arange(num))

    def info(self) -> dict:
        """What the page needs to draw its controls."""
        goal = objective(self.study)
        return {
            "study": self.study.name,
            "objective": {"metric": goal.metric, "direction": goal.direction, "source": goal.source},
            "strategies": [s.describe() for s in self.strategies.values()],
            "modalities": [{"name": n, "kind": s.kind, "grid": s.grid, "max_len": s.max_len}
                           for n, s in self.specs.items()],
            "heldout": self.source.num_heldout,
            "paint_grid": self.paint_grid,
            "canvas": self.source.cfg.canvas,
            "upload": ({"accept": list(FORMATS.values()), "max_bytes": MAX_BYTES,
                        "rule": upload_rule(max(self.specs["rgb"].grid))}
                       if "rgb" in self.specs else None),  # what POST /api/upload takes
            "attributes": list(ATTRIBUTES),
            "caption_words": [w for w in self.source.caption_words if not w.startswith("[")],
            "layers": min(min(len(s.model.encoder), len(s.model.decoder)) for s in self.strategies.values()),
        }

    def scene(self, req: SceneRequest) -> Scene:
        try:
            if req.source == "caption":
                if req.typed_caption:
                    raise SceneError("scene.typed_caption: goes with an image source (heldout, seed, upload); "
                                     "with source caption the typed caption is the whole scene")
                return self.source.from_caption(req.caption)
            if req.source == "upload":
                scene = self.uploads.get(req.upload)
            elif req.source == "seed":
                scene = self.source.from_seed(req.seed)
            else:
                scene = self.source.heldout(req.index)
            return self.source.with_caption(scene, req.caption) if req.typed_caption else scene
        except SceneError as e:
            raise ExploreError(str(e)) from None

    def upload(self, data: bytes, content_type: str, name: str = "") -> dict:
        """A PNG or JPEG of the user's as a scene (``uploads.py``): its id for later requests, and what it became."""
        if "rgb" not in self.specs:
            raise UploadError(422, "upload: this study's data has no rgb modality to give an image as")
        canvas, grid = self.source.cfg.canvas, self.specs["rgb"].grid
        rgb, (width, height) = read_image(data, content_type, canvas, max(grid))
        key = upload_id(data)
        label = f"uploaded {name[:80] or 'image'} ({width}x{height} px)"
        self.uploads.put(key, self.source.from_image(label, rgb))
        return {"upload": key, "label": label, "size": [width, height], "canvas": canvas}

    def predict(self, req: PredictRequest) -> dict:
        """Every chosen strategy's predictions on the scene, side by side, and the scene itself."""
        chosen = self.chosen(req.strategies)
        query = self.query(req)
        started = time.perf_counter()
        with self.lock:
            columns = {name: predict(strategy, query, self.source.tokenizers, self.answers)
                       for name, strategy in chosen.items()}
        return {
            "scene": self._describe(query),
            "targets": query.targets,
            "strategies": columns,
            "seconds": round(time.perf_counter() - started, 4),
        }

    def query(self, req: PredictRequest) -> Query:
        """The request checked against the study and the scene."""
        scene = self.scene(req.scene)
        for key, names in (("given", req.given), ("targets", req.targets)):
            if unknown := [n for n in names if n not in self.specs]:
                raise ExploreError(f"{key}: unknown modalities {unknown}; the study's data has {list(self.specs)}")
            if len(set(names)) < len(names):
                raise ExploreError(f"{key}: {names} names a modality twice")
        if missing := [n for n in req.given if n not in scene.tokens]:
            typed = " (a typed caption goes with an image through scene.typed_caption)" if "caption" in missing else ""
            raise ExploreError(f"given: {scene.label} has no {missing}; it has {list(scene.tokens)}{typed}")
        if both := [n for n in req.targets if n in req.given]:
            raise ExploreError(f"targets: {both} also given; to have a given image predicted, paint a hidden region")
        known = self._known(req)
        targets = [*known, *req.targets]
        if not targets:
            raise ExploreError("targets: nothing to predict; choose a predicted modality or paint a hidden region")
        for s in self.strategies.values():
            for depth in (len(s.model.encoder), len(s.model.decoder)):
                try:
                    layer_index(depth, req.layer)
                except ValueError as e:
                    raise ExploreError(f"layer: {e} ({s.name})") from None
        return Query(scene, req.given, targets, known, req.layer, req.steps)

    def _known(self, req: PredictRequest) -> dict[str, torch.Tensor]:
        """Given image modality -> bool [1, N] of what the encoder sees, for the ones with painted cells."""
        if not req.hidden:
            return {}
        images = [n for n in req.given if self.specs[n].kind == "image"]
        if self.paint_grid is None or not images:
            raise ExploreError("hidden: painting hides cells of a given image modality; none is given")
        cells = self.paint_grid[0] * self.paint_grid[1]
        if bad := sorted({c for c in req.hidden if c >= cells}):
            raise ExploreError(f"hidden: cells {bad[:8]} outside the {self.paint_grid[0]}x{self.paint_grid[1]} grid "
                               f"(0..{cells - 1})")
        seen = torch.ones(1, cells, dtype=torch.bool)
        seen[0, req.hidden] = False
        return {n: seen for n in images}

    def chosen(self, names: list[str]) -> dict[str, Strategy]:
        """Each name the request gives -> its strategy. A name is the study's masking choice (``Run.masking``: a
        preset such as ``dirichlet_4m``, or a family), or a family the study has one masking of (``dirichlet``
        for ``dirichlet_4m``)."""
        by_family: dict[str, list[str]] = {}
        for masking, strategy in self.strategies.items():
            by_family.setdefault(strategy.choice.run.family, []).append(masking)
        alias = {family: maskings[0] for family, maskings in by_family.items() if len(maskings) == 1}
        maskings = [n if n in self.strategies else alias.get(n) for n in names]
        if unknown := [n for n, m in zip(names, maskings) if m is None]:
            several = {n: by_family[n] for n in unknown if n in by_family}
            raise ExploreError(f"strategies: unknown {unknown}; this study has {list(self.strategies)}"
                               + (f" (a family of several: name one of {several})" if several else ""))
        if len(set(maskings)) < len(maskings):
            raise ExploreError(f"strategies: {names} names a strategy twice")
        return {n: self.strategies[m] for n, m in zip(names, maskings)}

    def _describe(self, query: Query) -> dict:
        """The scene as the page shows it: its tokens decoded, the given inputs with hidden cells, ground truth."""
        tokens = query.scene.tokens
        decoded = {m: draw.native(m, decode_tokens(self.source.tokenizers[m], self.specs[m], t)[0])
                   for m, t in tokens.items()}
        return {
            "label": query.scene.label,
            "decoded": decoded,
            "given": query.given,
            "hidden": {m: (~k[0]).nonzero()[:, 0].tolist() for m, k in query.known.items()},
            "truth": {m: draw.native(m, v) for m, v in query.scene.truth.items()},
            "scored": query.scene.scored is not None,
            "upload": None if query.scene.upload is None else draw.native("rgb", query.scene.upload),
        }

    def features(self, req: FeaturesRequest) -> dict:
        """Per strategy: held-out scenes' features in one frame (``features.py``), and where this scene falls."""
        chosen = self.chosen(req.strategies)
        if "rgb" not in self.specs:
            raise ExploreError("features are of rgb inputs; this study's data has no rgb")
        scene = self.scene(req.scene)
        labels = attribute_labels(self.source.cfg, self.feature_scenes, req.attribute)
        out = {}
        with self.lock, torch.no_grad():
            frame = self._shared_frame()
            for name, strategy in chosen.items():
                aligned, points = frame[strategy.name]
                here = None
                if "rgb" in scene.tokens:
                    here = aligned(encoder_features(strategy.model, self.specs, scene.tokens["rgb"], 1))[0]
                out[name] = {"points": rounded(points), "scene": None if here is None else rounded(here),
                             "agreement": round(aligned.agreement, 3)}
        categories = sorted(set(labels), key=lambda c: (len(c), c))
        return {"attribute": req.attribute, "categories": categories, "labels": [categories.index(c) for c in labels],
                "reference": next(iter(self.strategies)), "frame": FRAME, "strategies": out}

    def _shared_frame(self) -> dict[str, tuple[Aligned, torch.Tensor]]:
        """Every strategy of the study in the first one's frame, fitted once (so a choice of columns moves nothing)."""
        if not self._frame:
            rgb = self.source.val["rgb"][: len(self.feature_scenes)].long()
            features = {name: encoder_features(s.model, self.specs, rgb, 100) for name, s in self.strategies.items()}
            for name, aligned in align(features, next(iter(self.strategies))).items():
                self._frame[name] = aligned, aligned(features[name])
        return self._frame

    def report(self) -> dict:
        """The study's report (``ablate report``) if there is one: its table and the files beside it."""
        if not self.report_dir.is_dir():
            return {"table": None, "files": [], "message": f"no report yet: run ablate report {self.study.name}"}
        table = self.report_dir / "table.md"
        files = [p.relative_to(self.report_dir).as_posix() for p in sorted(self.report_dir.rglob("*"))]
        files = [f for f in files if self.report_file(f) is not None]
        return {"table": table.read_text() if table.is_file() else None, "files": files, "message": None}

    def report_file(self, path: str) -> Path | None:
        """A file inside the report folder, or None (outside it, missing, or of another kind)."""
        target = (self.report_dir / path).resolve()
        inside = target.is_relative_to(self.report_dir) and target != self.report_dir
        return target if inside and target.is_file() and target.suffix in REPORT_SUFFIXES else None
