"""Masked multimodal pre-training with Accelerate: one function from a resolved ``Config`` to a trained run.

The step, end to end: a global batch of tokens -> masks from the strategy (own RNG stream)
-> this process's slice -> ``pack`` (``model/feed.py``: between steps or ahead in a thread) -> ``FourM.loss``
-> AdamW. Losses, token and FLOP counts stay on the device and are read once per ``log_every`` steps.
Every process draws the same global batch and masks and keeps its slice, so a run gives the same updates on 1 or N
processes (with ``token`` loss weighting and fixed budgets: exactly; ``mod`` averages per process).
What the run leaves in its folder (``train.out_dir``): ``model/run_folder.py``.
"""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from tqdm import tqdm

from model.batch import DecoderInput
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import Config
from model.dataset import batches, load_split
from model.feed import training_batches
from model.flops import Throughput, peak_tflops
from model.lease import Lease, RunFolderLeased
from model.mask_stats import MaskStats
from model.network import FourM
from model.run_folder import RunFolder
from model.setup import Setup, check
from model.step_signals import StepSignals

# Offsets that split one seed into independent streams.
INIT_STREAM, DATA_STREAM, MASK_STREAM = 0, 1_000_003, 2_000_003


def lr_at(step: int, cfg: Config) -> float:
    """Linear warmup then cosine decay to ``min_lr`` (nanoGPT's schedule)."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps))
    return t.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (t.lr - t.min_lr)


def optimizer_for(model: torch.nn.Module, cfg: Config, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases, embeddings' 1-D params); ``fused``: one
    kernel for all parameters (CUDA), instead of a few per parameter group."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    # None, not False: an explicit False would also turn off torch's default (foreach) implementation.
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2), fused=fused or None)


class Tracker(Protocol):
    """Where a run's metrics and files go (``ablate.tracking.RunTracker`` is one, on MLflow)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def end(self, status: str) -> None: ...  # FINISHED | KILLED (goes on later) | FAILED


class TrainState:
    """What Accelerate does not checkpoint by itself: the step and the masking RNG as of the last batch trained
    on (``mask_rng``; the generator itself may be ahead, masking prefetched batches)."""

    def __init__(self, mask_generator: torch.Generator):
        self.step = 0
        self.mask_generator = mask_generator
        self.mask_rng = mask_generator.get_state()

    def state_dict(self) -> dict:
        return {"step": self.step, "mask_rng": self.mask_rng}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.mask_rng = state["mask_rng"]
        self.mask_generator.set_state(self.mask_rng)


def _mixed_precision(cfg: Config) -> str:
    if cfg.train.mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return cfg.train.mixed_precision


def train(
    cfg: Config,
    evaluate_at_end: bool = True,
    progress: bool = True,
    until_step: int | None = None,
    after_step: Callable[[int, FourM], None] | None = None,
    open_tracker: Callable[[Config], Tracker | None] | None = None,
    checkpoint_on: tuple[signal.Signals, ...] = (),
) -> dict[str, float]:
    """Train (or resume) the run in ``cfg.train.out_dir``; returns the final evaluation (or last losses).

    ``until_step`` stops early at that step with a checkpoint (no evaluation), as a preempted job would.
    ``after_step(step, model)`` is called on the main process after every optimizer step (e.g. to
    evaluate along the way, as ``benchmarks/bench_learning.py`` does); it must leave the model as it was.
    ``open_tracker(cfg)`` opens the run's tracker on the main process, once the config is checked and the run
    folder exists (``ablate.tracking.run_tracker`` continues the run's MLflow run); None logs nowhere else.
    ``checkpoint_on``: signals (a scheduler's warning that it stops the job) on which the run finishes its
    step, saves a checkpoint there and hands the signal to the handler installed before (submitit's requeues
    the job), so the requeued job trains no step again (``model/step_signals.py``).

    The run folder is leased for the whole call: if another live trainer holds it, this raises
    ``RunFolderLeased`` before anything in it is written.
    """
    setup = check(cfg)
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    # cpu=True is what makes Accelerate read torchrun's RANK/WORLD_SIZE on a GPU-less machine (gloo backend).
    # Dirichlet-style masking can leave a modality (and its head) out of one process's slice: DDP must
    # not wait for gradients of parameters a process did not use.
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        mixed_precision=_mixed_precision(cfg),
        gradient_accumulation_steps=t.grad_accum,
    )
    lease = Lease(Path(t.out_dir)) if accelerator.is_main_process else None
    try:
        refused: list[Exception | None] = [None]
        if lease is not None:
            try:
                lease.acquire()
            except Exception as e:  # noqa: BLE001  (held elsewhere, or a folder it cannot lock: told to all)
                refused = [e]
        if accelerator.num_processes > 1:  # every process exits, or none
            broadcast_object_list(refused)
        if refused[0] is not None:
            raise refused[0]
        return _train(cfg, setup, accelerator, lease, evaluate_at_end, progress, until_step, after_step,
                      open_tracker, checkpoint_on)
    finally:
        if lease is not None:
            lease.release()


def _train(cfg: Config, setup: Setup, accelerator: Accelerator, lease: Lease | None, evaluate_at_end: bool,
           progress: bool, until_step: int | None, after_step: Callable[[int, FourM], None] | None,
           open_tracker: Callable[[Config], Tracker | None] | None,
           checkpoint_on: tuple[signal.Signals, ...]) -> dict[str, float]:
    t = cfg.train
    rank, world = accelerator.process_index, accelerator.num_processes
    folder = RunFolder(t.out_dir)
    if accelerator.is_main_process:
        folder.write_config(cfg)
    accelerator.wait_for_everyone()

    set_seed(t.seed + INIT_STREAM)
    model = setup.new_model(cfg)
    cuda = accelerator.device.type == "cuda"
    optimizer = optimizer_for(model, cfg, fused=cuda)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg) / t.lr)
    # The scheduler stays unprepared: Accelerate would step it once per process per step.
    model, optimizer = accelerator.prepare(model, optimizer)
    network = accelerator.unwrap_model(model)
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls outside bf16 autocast
    if t.compile:
        network.compile_trunk()
    state = TrainState(torch.Generator().manual_seed(t.seed + MASK_STREAM))
    # Every process draws the same global masks, so every process keeps the same statistics; checkpointed
    # so that a resumed run's statistics cover all its steps. Adaptive strategies carry state (hard: loss map).
    stats = MaskStats(setup.specs)
    states = {"scheduler": scheduler, "train": state, "masking": setup.masking, "mask_stats": stats}

    resume_from = folder.latest_checkpoint()
    if resume_from is not None:
        load_checkpoint(accelerator, resume_from, states)
        _say(accelerator, f"resuming at step {state.step} ({resume_from})")
    tracker = open_tracker(cfg) if open_tracker is not None and accelerator.is_main_process else None

    history = folder.open_history(state.step) if accelerator.is_main_process else None
    stop_at = min(until_step or t.steps, t.steps)
    bar = tqdm(total=t.steps, initial=state.step, desc="train", unit="step", disable=not (progress and rank == 0))
    model.train()
    throughput = Throughput(cfg.model, network.vocab_sizes, accelerator.device,
                            peak_tflops(accelerator.device, t.peak_tflops))
    last = {}
    first_step, signals, fed = state.step, StepSignals(checkpoint_on), None
    signals.install()
    try:
        data = load_split(cfg.data.root, "train")
        # The data order is a pure function of the seed: on resume, skip the batches already seen.
        stream = batches(data, t.batch_size * world, torch.Generator().manual_seed(t.seed + DATA_STREAM))
        for _ in range(state.step * t.grad_accum):
            next(stream)
        local, steps = slice(rank * t.batch_size, (rank + 1) * t.batch_size), range(state.step, stop_at)
        fed = training_batches(setup, stream, state.mask_generator, local, accelerator.device, steps, t)
        while state.step < stop_at:
            losses: dict[str, torch.Tensor] = {}  # summed on the device: a float() per step would wait for it
            for _ in range(t.grad_accum):
                masks, enc, dec, state.mask_rng = next(fed)
                stats.update(masks)
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        loss, per_mod, token_loss = network.loss_from(model(enc, dec), dec)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and t.grad_clip > 0:
                        accelerator.clip_grad_norm_(model.parameters(), t.grad_clip)
                    optimizer.step()
                    if accelerator.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                if setup.masking.learns_from_losses:
                    # They mask the global batch, so they learn from every process's losses.
                    setup.masking.observe(*_global(accelerator, dec, token_loss))
                throughput.add(enc, dec)
                for k, v in {**per_mod, "loss": loss}.items():
                    losses[k] = losses.get(k, 0.0) + v.detach() / t.grad_accum
            state.step += 1
            if lease is not None and lease.lost:  # before this step writes anything
                # Rank 0 only: the other processes stop when its process, and so the process group, ends.
                raise RunFolderLeased(f"{folder.path}: the run folder's lease was taken over by {lease.lost}")
            if state.step % t.log_every == 0 or state.step == stop_at:
                per_mod_sum = _mean_over_processes(accelerator, {k: float(v) for k, v in losses.items()})
                last = {
                    "train/loss": per_mod_sum.pop("loss"),
                    **{f"train/loss/{k}": v for k, v in per_mod_sum.items()},
                    "train/lr": scheduler.get_last_lr()[0],
                    **throughput.read(world, lambda x: accelerator.reduce(x, "sum")),
                }
                if history is not None:
                    history.append(state.step, last)
                if tracker is not None:
                    tracker.log_metrics(last | {f"masks/{k}": v for k, v in stats.summary().items()}, state.step)
                bar.set_postfix(loss=f"{last['train/loss']:.3f}", tok_s=f"{last['train/tokens_per_s']:.0f}",
                                **({"mfu": f"{last['train/mfu']:.1%}"} if "train/mfu" in last else {}))
            bar.update(1)
            saved = state.step % t.checkpoint_every == 0 or state.step == stop_at
            if saved:
                save_checkpoint(accelerator, folder, state.step, states)
            if _signalled(accelerator, signals, state.step, t.log_every, stop_at):
                if not saved:
                    save_checkpoint(accelerator, folder, state.step, states)
                caught = signals.caught.name if signals.caught else "another process's signal"
                _say(accelerator, f"{caught} at step {state.step}: checkpoint saved there")
                signals.hand_over()
            if after_step is not None and accelerator.is_main_process:
                after_step(state.step, network)
        if signals.caught is not None:  # caught after the last step's check: its checkpoint is saved
            signals.hand_over()
    except BaseException as e:
        _end(tracker, e)
        raise
    finally:
        signals.restore()
        if fed is not None:
            fed.close()  # stops a prefetching thread
        bar.close()
        if history is not None:
            history.close()
        if state.step > first_step:
            _say(accelerator, f"trained steps {first_step + 1}-{state.step}")

    results = last
    if state.step < t.steps:  # stopped early: the run goes on later
        if tracker is not None:
            tracker.end("KILLED")
        return results
    try:
        if tracker is not None:
            for path in stats.figures(folder):
                tracker.log_artifact(path, RunFolder.MASKS)
        if evaluate_at_end and accelerator.is_main_process:
            results = _evaluate(network, cfg, setup, folder, tracker)
    except BaseException as e:
        _end(tracker, e)
        raise
    if tracker is not None:
        tracker.end("FINISHED")
    accelerator.wait_for_everyone()
    return results


def _signalled(accelerator: Accelerator, signals: StepSignals, step: int, log_every: int, stop_at: int) -> bool:
    """Whether to checkpoint and hand a caught signal over now. Processes agree (saving a checkpoint is
    collective) at logging steps and the last one only, where they talk anyway: one more exchange per step
    would be a host sync."""
    if accelerator.num_processes == 1:
        return signals.caught is not None
    if step % log_every and step != stop_at:
        return False
    flag = torch.tensor(float(signals.caught is not None), device=accelerator.device)
    return bool(accelerator.reduce(flag, "max").item())


def _say(accelerator: Accelerator, message: str) -> None:
    """A line in the job's log (stderr), from the main process."""
    if accelerator.is_main_process:
        tqdm.write(f"train: {message}", file=sys.stderr)


def _end(tracker: Tracker | None, error: BaseException) -> None:
    """Close the MLflow run of a run that stopped on ``error``: interrupts and submitit's requeue exit are not
    failures (the run goes on from its checkpoint), anything else is."""
    if tracker is not None:
        tracker.end("KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED")


def _global(accelerator: Accelerator, dec: DecoderInput, token_loss: torch.Tensor) -> tuple:
    """Decoder slots and per-slot losses of the whole global batch, in process order."""
    if accelerator.num_processes == 1:
        return dec, token_loss
    return DecoderInput(*(accelerator.gather(x) for x in dec)), accelerator.gather(token_loss)


def _mean_over_processes(accelerator: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """Average logged losses over processes (modalities absent from a process's batch count as absent)."""
    if accelerator.num_processes == 1:
        return values
    gathered = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(gathered, values)
    keys = {k for g in gathered for k in g}
    return {k: sum(g[k] for g in gathered if k in g) / sum(k in g for g in gathered) for k in sorted(keys)}


def _evaluate(model: FourM, cfg: Config, setup: Setup, folder: RunFolder,
              tracker: Tracker | None) -> dict[str, float]:
    from model.evaluate import evaluate
    from model.tasks import skipped_tasks

    model.eval()
    e = cfg.eval
    results = evaluate(
        model,
        setup.specs,
        cfg.data.root,
        num_samples=e.num_samples,
        batch_size=e.batch_size,
        seed=e.seed,
        generation_steps=e.generation_steps,
        probe_samples=e.probe_samples,
        figure=folder.generation,
    )
    folder.write_eval(results)
    if tracker is not None:
        tracker.log_metrics({f"eval/{k}": v for k, v in results.items()}, cfg.train.steps)
        tracker.log_artifact(folder.eval)
        if folder.generation.is_file():  # drawn only on a generated data set
            tracker.log_artifact(folder.generation)
        if skipped := skipped_tasks(setup.specs, cfg.data.root):
            tracker.set_tags({"eval_skipped": "; ".join(f"{task}: {why}" for task, why in skipped.items())})
    return results
