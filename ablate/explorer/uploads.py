"""Images the user uploads: checked, cropped to a centered square, resized to the data's canvas, and kept
(the last ``KEEP``, by a hash of their bytes) for the requests that name them.

What is allowed: a PNG or JPEG (by its bytes, not only its Content-Type) of at most ``MAX_BYTES`` and
``MAX_SIDE`` pixels a side, and at least as many pixels a side as the rgb token grid has cells (every token
then covers some of the image). Anything else is an ``UploadError`` with an HTTP status and a message that
says what is allowed.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from ablate.explorer.recent import Recent
from ablate.explorer.scenes import Scene, SceneError

MAX_BYTES = 5 * 1024 * 1024
MAX_SIDE = 4096
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg"}  # Pillow's format name -> the Content-Type it is sent as
KEEP = 16  # uploads kept for later requests (painting, changing targets) before the oldest is dropped


class UploadError(ValueError):
    """An upload refused: ``status`` is its HTTP status (413 too large, 415 not a PNG/JPEG, 422 unusable)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def upload_rule(min_side: int) -> str:
    """What an upload may be, as every refusal says it."""
    return (f"send a PNG or JPEG (Content-Type {' or '.join(FORMATS.values())}) of at most {MAX_BYTES // 2**20} MB "
            f"and {MAX_SIDE}x{MAX_SIDE} px, at least {min_side}x{min_side} px")


def read_image(data: bytes, content_type: str, canvas: int, min_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A PNG or JPEG's bytes -> (its centered square resized to the canvas, uint8 [canvas, canvas, 3]; its size)."""
    rule = upload_rule(min_side)
    media = content_type.split(";")[0].strip().lower()
    if media not in FORMATS.values():
        raise UploadError(415, f"upload: Content-Type {media or 'none'} is not allowed; {rule}")
    if len(data) > MAX_BYTES:
        raise UploadError(413, f"upload: {len(data)} bytes; {rule}")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only: the size is checked before any decoding
    except Image.DecompressionBombError as e:
        raise UploadError(422, f"upload: {e}; {rule}") from None
    except UnidentifiedImageError:
        raise UploadError(415, f"upload: not a readable image (no image format Pillow knows); {rule}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UploadError(415, f"upload: not a readable image ({e}); {rule}") from None
    if FORMATS.get(image.format) != media:
        raise UploadError(415, f"upload: the bytes are a {image.format} image, sent as {media}; {rule}")
    width, height = image.size
    if max(width, height) > MAX_SIDE or min(width, height) < min_side:
        raise UploadError(422, f"upload: {width}x{height} px; {rule}")
    try:
        rgb = image.convert("RGB")  # decodes: a truncated or corrupt file fails here
    except (OSError, SyntaxError, ValueError) as e:  # Pillow raises SyntaxError for a broken PNG
        raise UploadError(422, f"upload: the {image.format} cannot be decoded ({e}); {rule}") from None
    side = min(width, height)
    box = ((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2)
    square = rgb.resize((canvas, canvas), Image.Resampling.BOX, box=box)  # BOX: each pixel the mean of its area
    return np.asarray(square, dtype=np.uint8), (width, height)


def upload_id(data: bytes) -> str:
    """What requests name an upload by: the first 16 hex digits of its bytes' SHA-256."""
    return hashlib.sha256(data).hexdigest()[:16]


class Uploads:
    """The last ``KEEP`` uploaded images as scenes, by ``upload_id``."""

    def __init__(self):
        self._scenes: Recent[str, Scene] = Recent(KEEP)

    def put(self, key: str, scene: Scene) -> None:
        self._scenes.put(key, scene)

    def __len__(self) -> int:
        return len(self._scenes)

    def get(self, key: str) -> Scene:
        scene = self._scenes.get(key)
        if scene is None:
            raise SceneError(f"scene.upload={key!r}: no such upload (the last {KEEP} are kept); upload the image again")
        return scene
