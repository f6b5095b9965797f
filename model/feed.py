"""The training loop's batches: global batch -> masks -> this process's slice -> packed -> on the device.

``inline`` makes each batch when the loop asks for it, between steps. ``prefetch`` makes them in a background
thread, up to ``PREFETCH_DEPTH`` ahead, so that a GPU does not wait for the CPU's masking and packing; the
batches are the same, in the same order, from the same generator. Adaptive strategies
(``learns_from_losses``) mask with the losses of the step before, so they are always fed inline
(``model/run_setup.py`` refuses ``train.feed=prefetch`` for them). Both make batches on the CPU and copy them
to the device; the data set and the masking themselves do not move onto the device (yet).

Because the generator may run ahead of training, every batch carries the generator's state after its masks:
that, not the generator's current state, is what a checkpoint keeps (``TrainState`` in ``model/train.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Full, Queue
from typing import NamedTuple, TypeVar

import torch

from model.batch import DecoderInput, EncoderInput, Masks
from model.config import TrainConfig
from model.masking.spans import to_t5
from model.packing import pack
from model.run_setup import Setup

PREFETCH_DEPTH = 2  # batches ready in the queue (the thread makes one more meanwhile)
T = TypeVar("T")


class Fed(NamedTuple):
    masks: dict[str, Masks]  # the global batch's masks, modality -> bool [B * world, N_m] (for MaskStats)
    enc: EncoderInput  # this process's slice, packed, on the device: [B, Le]
    dec: DecoderInput  # [B, Ld]
    mask_rng: torch.Tensor  # the masking generator's state after these masks


def mode(t: TrainConfig, setup: Setup, device: torch.device) -> str:
    """``inline`` or ``prefetch``: ``auto`` prefetches on a GPU, where the masking would otherwise sit between
    steps, and feeds inline on a CPU, whose cores the step already uses; adaptive strategies always inline."""
    if t.feed != "auto":
        return t.feed
    return "prefetch" if device.type == "cuda" and not setup.masking.learns_from_losses else "inline"


def training_batches(
    setup: Setup,
    stream: Iterator[dict[str, torch.Tensor]],
    generator: torch.Generator,
    local: slice,
    device: torch.device,
    steps: range,
    t: TrainConfig,
) -> Iterator[Fed]:
    """``t.grad_accum`` batches for each step in ``steps``, from the global batches of ``stream`` (modality ->
    int64 [B * world, N_m]) masked with ``generator``, made as ``mode`` says."""

    def made() -> Iterator[Fed]:
        for step in steps:
            setup.masking.set_progress(step, t.steps)
            for _ in range(t.grad_accum):
                batch = next(stream)
                masks = setup.masking(batch, generator)
                after = generator.get_state()
                enc, dec = local_inputs(setup, batch, masks, local)
                yield Fed(masks, _to(device, enc), _to(device, dec), after)

    return prefetched(made(), PREFETCH_DEPTH) if mode(t, setup, device) == "prefetch" else made()


def local_inputs(setup: Setup, batch: dict, masks: dict, local: slice) -> tuple[EncoderInput, DecoderInput]:
    """This process's slice of the global batch, packed (sequences in T5 span format if the strategy asks)."""
    batch = {k: v[local] for k, v in batch.items()}
    masks = {k: Masks(m.input[local], m.target[local]) for k, m in masks.items()}
    targets = None
    if setup.masking.sequence_format == "t5":
        batch, targets, masks = to_t5(setup.specs, batch, masks)
    return pack(setup.specs, batch, masks, setup.input_budget, setup.target_budget, target_tokens=targets)


def _to(device: torch.device, x: EncoderInput | DecoderInput) -> EncoderInput | DecoderInput:
    """On a GPU through pinned memory, so that the copy does not wait for the host."""
    if device.type != "cuda":
        return x.to(device)
    return type(x)(*(v.pin_memory().to(device, non_blocking=True) for v in x))


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, made in a background thread at most ``depth`` ahead; its error is raised here, in its place.

    The thread stops once ``items`` ends, or soon after this generator is closed (or collected).
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                pass
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            put((False, e))
            return
        put((False, None))

    worker = threading.Thread(target=work, name="feed", daemon=True)
    worker.start()
    try:
        while True:
            more, value = queue.get()  # the worker always ends with an entry (more=False)
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        worker.join()
