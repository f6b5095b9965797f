"""What the page may ask, as pydantic models: types, sizes and ranges are checked before any work.

Checks that need the study (known strategies and modalities, the scene's index range, the
paint grid's size) happen in ``Explorer`` and are answered with a 422 as well.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ablate.explorer.features import Attribute

Name = Annotated[str, Field(min_length=1, max_length=64)]


class Request(BaseModel):
    """No unknown keys, no "3" -> 3 conversions."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SceneRequest(Request):
    source: Literal["heldout", "seed", "caption", "upload"] = "heldout"
    index: int = Field(0, ge=0)  # heldout: a validation scene
    seed: int = Field(0, ge=0, le=2**31 - 1)  # seed: a newly rendered scene
    caption: str = Field("", max_length=300)  # caption: typed words
    upload: str = Field("", pattern=r"^([0-9a-f]{16})?$")  # upload: what POST /api/upload answered
    # With an image source (heldout, seed, upload): the typed caption replaces the scene's (a combined query).
    typed_caption: bool = False


class PredictRequest(Request):
    scene: SceneRequest = Field(default_factory=SceneRequest)
    strategies: list[Name] = Field(min_length=1, max_length=16)
    given: list[Name] = Field(min_length=1, max_length=16)
    targets: list[Name] = Field(default_factory=list, max_length=16)
    # Cells of the image grid (row-major) hidden from every given image modality, which is then in-painted.
    hidden: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, max_length=4096)
    layer: int = Field(-1, ge=-64, le=63)  # of the encoder and decoder attention maps; -1 = last
    steps: int = Field(8, ge=1, le=64)  # ROAR steps per image modality


class FeaturesRequest(Request):
    scene: SceneRequest = Field(default_factory=SceneRequest)
    strategies: list[Name] = Field(min_length=1, max_length=16)
    attribute: Attribute = "objects"  # what colors the points
