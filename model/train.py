"""Masked multimodal pre-training with Accelerate: one function from a resolved ``Config`` to a trained run.

``train`` reads in phases, as nanoGPT's and MAE's loops do: it takes what a run holds while it trains
(``_held``: the run folder's lease, its config, the tracker, the scheduler's signals deferred to step
boundaries), prepares the run (``_prepare``: model, optimizer, the state resumed from the latest checkpoint),
runs the step loop (``_loop``: ``_step``, ``_log``, ``_checkpoint``) and finishes (``_finish``: the mask
figures, the evaluation). What it logs is named by the code that produces it, and ``logged_metrics`` lists it.

The step, end to end: a global batch of tokens -> masks from the strategy (own RNG stream)
-> this process's slice -> ``pack`` (``model/feed.py``: between steps or ahead in a thread) -> ``FourM.loss``
-> AdamW. Losses, token and FLOP counts stay on the device and are read once per ``log_every`` steps.
Every process draws the same global batch and masks and keeps its slice, so a run gives the same updates on 1 or N
processes (with ``token`` loss weighting and fixed budgets: exactly; ``mod`` averages per process).

A run's folder (``train.out_dir``) and its files: ``model/run_folder.py``.
"""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from tqdm import tqdm

from model.batch import DecoderInput
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import Config
from model.dataset import ModalitySpec, batches, load_split
from model.feed import Fed, training_batches
from model.flops import Throughput, peak_tflops
from model.lease import Lease, RunFolderLeased
from model.mask_stats import MaskStats
from model.network import FourM
from model.run_folder import History, RunFolder
from model.run_setup import Setup, check
from model.step_signals import StepSignals

# Offsets that split one seed into independent streams.
INIT_STREAM, DATA_STREAM, MASK_STREAM = 0, 1_000_003, 2_000_003
# The metrics a step logs itself (``_log``; the others: ``Throughput.NAMES``, ``MaskStats.names``).
LOSS, LR = "train/loss", "train/lr"  # the loss (and per target modality: ``loss_metric``), the learning rate


def loss_metric(modality: str) -> str:
    """The logged name of one modality's part of the loss: ``train/loss/<m>``."""
    return f"{LOSS}/{modality}"


def logged_metrics(specs: dict[str, ModalitySpec]) -> list[str]:
    """The names ``train`` logs every ``train.log_every`` steps, from their producers (``train/loss/<m>`` once
    ``m`` was a target, ``train/mfu`` where the device's peak is known; ``masks/...`` to the tracker only)."""
    return [LOSS, *(loss_metric(m) for m in sorted(specs)), LR, *Throughput.NAMES, *MaskStats.names(specs)]


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


@dataclass(frozen=True)
class TrainOptions:
    """How ``train`` runs a config, beyond what the config says.

    ``until_step`` stops early at that step with a checkpoint (no evaluation), as a preempted job would.
    ``after_step(step, model)`` is called on the main process after every optimizer step (e.g. to
    evaluate along the way, as ``benchmarks/bench_learning.py`` does); it must leave the model as it was.
    ``open_tracker(cfg)`` opens the run's tracker on the main process, once the config is checked and the run
    folder holds it (``ablate.tracking.run_tracker`` continues the run's MLflow run); None logs nowhere else.
    ``checkpoint_on``: signals (a scheduler's warning that it stops the job) on which the run finishes its
    step, saves a checkpoint there and hands the signal to the handler installed before (submitit's requeues
    the job), so the requeued job trains no step again (``model/step_signals.py``).
    """

    evaluate_at_end: bool = True
    progress: bool = True  # a progress bar on the main process
    until_step: int | None = None
    after_step: Callable[[int, FourM], None] | None = None
    open_tracker: Callable[[Config], Tracker | None] | None = None
    checkpoint_on: tuple[signal.Signals, ...] = ()


@dataclass
class Held:
    """What a run holds while it trains (``_held``): the main process's lease and tracker, every process's
    deferred signals."""

    lease: Lease | None
    tracker: Tracker | None
    signals: StepSignals
    finished: bool = False  # trained to its last step (and evaluated, if asked): the tracker ends FINISHED


@dataclass
class Prepared:
    """A prepared run (``_prepare``): what the step loop and the final evaluation work on."""

    cfg: Config
    setup: Setup
    accelerator: Accelerator
    model: torch.nn.Module  # as Accelerate prepared it (wrapped in DDP on several processes)
    network: FourM  # the same model, unwrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR  # unprepared: Accelerate would step it once per process per step
    state: TrainState
    # Every process draws the same global masks, so every process keeps the same statistics; checkpointed
    # so that a resumed run's statistics cover all its steps.
    stats: MaskStats

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.cfg.train.out_dir)

    @property
    def states(self) -> dict:
        """What a checkpoint saves beside Accelerate's state. Adaptive strategies carry state (hard: loss map)."""
        return {"scheduler": self.scheduler, "train": self.state, "masking": self.setup.masking,
                "mask_stats": self.stats}


def train(cfg: Config, options: TrainOptions = TrainOptions()) -> dict[str, float]:
    """Train (or resume) the run in ``cfg.train.out_dir``; returns the final evaluation (or the last logged
    metrics: stopped early, not evaluating, or not the main process).

    The run folder is leased for the whole call: if another live trainer holds it, this raises
    ``RunFolderLeased`` before anything in it is written.
    """
    setup = check(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    accelerator = _accelerator(cfg)
    with _held(cfg, accelerator, options) as held:
        run = _prepare(cfg, setup, accelerator)
        last = _loop(run, held, options)
        if run.state.step < cfg.train.steps:  # stopped early: the run goes on later
            return last
        results = _finish(run, held.tracker, options.evaluate_at_end)
        held.finished = True
        return last if results is None else results


def _accelerator(cfg: Config) -> Accelerator:
    # cpu=True is what makes Accelerate read torchrun's RANK/WORLD_SIZE on a GPU-less machine (gloo backend).
    # Dirichlet-style masking can leave a modality (and its head) out of one process's slice: DDP must
    # not wait for gradients of parameters a process did not use.
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        mixed_precision=_mixed_precision(cfg),
        gradient_accumulation_steps=cfg.train.grad_accum,
    )


def _mixed_precision(cfg: Config) -> str:
    if cfg.train.mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return cfg.train.mixed_precision


@contextmanager
def _held(cfg: Config, accelerator: Accelerator, options: TrainOptions) -> Iterator[Held]:
    """Take what a run holds while it trains, in this order, and let it go in reverse: the run folder's lease
    (before anything in it is written), the folder with its config, the tracker, the signals deferred to step
    boundaries. The tracker ends FAILED on an error, KILLED on an interrupt or submitit's requeue exit and on
    an early stop (the run goes on from its checkpoint), FINISHED once ``finished``."""
    with ExitStack() as stack:
        lease = Lease(Path(cfg.train.out_dir)) if accelerator.is_main_process else None
        if lease is not None:
            stack.callback(lease.release)  # nothing to give back if it was not taken
        _acquire(accelerator, lease)
        if accelerator.is_main_process:
            RunFolder(cfg.train.out_dir).write_config(cfg)
        accelerator.wait_for_everyone()
        opens = options.open_tracker is not None and accelerator.is_main_process
        held = Held(lease, options.open_tracker(cfg) if opens else None, StepSignals(options.checkpoint_on))
        held.signals.install()
        stack.callback(held.signals.restore)
        try:
            yield held
        except BaseException as e:
            _end(held.tracker, "KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "FAILED")
            raise
        _end(held.tracker, "FINISHED" if held.finished else "KILLED")


def _acquire(accelerator: Accelerator, lease: Lease | None) -> None:
    """Take the run folder's lease on the main process; every process raises if it was refused."""
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


def _prepare(cfg: Config, setup: Setup, accelerator: Accelerator) -> Prepared:
    """The model, its optimizer and schedule, the training state: new, or resumed from the latest checkpoint."""
    t = cfg.train
    set_seed(t.seed + INIT_STREAM)
    model = setup.new_model(cfg)
    cuda = accelerator.device.type == "cuda"
    optimizer = optimizer_for(model, cfg, fused=cuda)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg) / t.lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    network = accelerator.unwrap_model(model)
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls outside bf16 autocast
    if t.compile:
        network.compile_trunk()
    state = TrainState(torch.Generator().manual_seed(t.seed + MASK_STREAM))
    run = Prepared(cfg, setup, accelerator, model, network, optimizer, scheduler, state, MaskStats(setup.specs))
    resume_from = run.folder.latest_checkpoint()
    if resume_from is not None:
        load_checkpoint(accelerator, resume_from, run.states)
        _say(accelerator, f"resuming at step {state.step} ({resume_from})")
    return run


def _loop(run: Prepared, held: Held, options: TrainOptions) -> dict[str, float]:
    """Train from the run's step to ``until_step`` (or its last step); returns the last logged metrics. A caught
    signal is handed over at the checkpoint of the step it arrived in; the handlers are restored at the end."""
    state, t, accelerator, main = run.state, run.cfg.train, run.accelerator, run.accelerator.is_main_process
    stop_at, first_step, last = min(options.until_step or t.steps, t.steps), state.step, {}
    try:
        with ExitStack() as stack:
            history = stack.enter_context(closing(run.folder.open_history(state.step))) if main else None
            bar = stack.enter_context(tqdm(total=t.steps, initial=state.step, desc="train", unit="step",
                                           disable=not (options.progress and accelerator.process_index == 0)))
            run.model.train()
            throughput = Throughput(run.cfg.model, run.network.vocab_sizes, accelerator.device,
                                    peak_tflops(accelerator.device, t.peak_tflops))
            fed = stack.enter_context(closing(_batches(run, stop_at)))  # closing stops a prefetching thread
            while state.step < stop_at:
                losses = _step(run, fed, throughput)
                state.step += 1
                if held.lease is not None and held.lease.lost:  # before this step writes anything
                    # Rank 0 only: the other processes stop when its process, and so the process group, ends.
                    raise RunFolderLeased(f"{run.folder.path}: the run folder's lease was taken over by "
                                          f"{held.lease.lost}")
                if state.step % t.log_every == 0 or state.step == stop_at:
                    last = _log(run, losses, throughput, history, held.tracker)
                    bar.set_postfix(_shown(last))
                bar.update(1)
                _checkpoint(run, held.signals, stop_at)
                if options.after_step is not None and main:
                    options.after_step(state.step, run.network)
            held.signals.hand_over()  # one caught after the last step's check (its checkpoint is saved), if any
    finally:
        if state.step > first_step:
            _say(accelerator, f"trained steps {first_step + 1}-{state.step}")
    return last


def _batches(run: Prepared, stop_at: int) -> Iterator[Fed]:
    """The run's batches from its step to ``stop_at``. The data order is a pure function of the seed: on resume,
    the batches already seen are skipped."""
    t, accelerator, state = run.cfg.train, run.accelerator, run.state
    rank, world = accelerator.process_index, accelerator.num_processes
    data = load_split(run.cfg.data.root, "train")
    stream = batches(data, t.batch_size * world, torch.Generator().manual_seed(t.seed + DATA_STREAM))
    for _ in range(state.step * t.grad_accum):
        next(stream)
    local, steps = slice(rank * t.batch_size, (rank + 1) * t.batch_size), range(state.step, stop_at)
    return training_batches(run.setup, stream, state.mask_generator, local, accelerator.device, steps, t)


def _step(run: Prepared, fed: Iterator[Fed], throughput: Throughput) -> dict[str, torch.Tensor]:
    """One optimizer step over ``train.grad_accum`` batches; -> its losses (``loss`` and per modality), averaged
    over those batches and left on the device: a float() per step would wait for it."""
    accelerator, model, masking, t = run.accelerator, run.model, run.setup.masking, run.cfg.train
    losses: dict[str, torch.Tensor] = {}
    for _ in range(t.grad_accum):
        masks, enc, dec, run.state.mask_rng = next(fed)
        run.stats.update(masks)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss, per_mod, token_loss = run.network.loss_from(model(enc, dec), dec)
            accelerator.backward(loss)
            if accelerator.sync_gradients and t.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), t.grad_clip)
            run.optimizer.step()
            if accelerator.sync_gradients:
                run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
        if masking.learns_from_losses:
            # They mask the global batch, so they learn from every process's losses.
            masking.observe(*_global(accelerator, dec, token_loss))
        throughput.add(enc, dec)
        for k, v in {**per_mod, "loss": loss}.items():
            losses[k] = losses.get(k, 0.0) + v.detach() / t.grad_accum
    return losses


def _log(run: Prepared, losses: dict[str, torch.Tensor], throughput: Throughput, history: History | None,
         tracker: Tracker | None) -> dict[str, float]:
    """The metrics of a logging step (``logged_metrics`` lists their names), written to the history and, with
    the mask statistics, to the tracker; -> the history's."""
    accelerator, step = run.accelerator, run.state.step
    mean = _mean_over_processes(accelerator, {k: float(v) for k, v in losses.items()})
    metrics = {
        LOSS: mean.pop("loss"),
        **{loss_metric(m): v for m, v in mean.items()},
        LR: run.scheduler.get_last_lr()[0],
        **throughput.read(accelerator.num_processes, lambda x: accelerator.reduce(x, "sum")),
    }
    if history is not None:
        history.append(step, metrics)
    if tracker is not None:
        tracker.log_metrics(metrics | run.stats.metrics(), step)
    return metrics


def _shown(metrics: dict[str, float]) -> dict[str, str]:
    """The progress bar's part of the logged metrics."""
    shown = {"loss": f"{metrics[LOSS]:.3f}", "tok_s": f"{metrics[Throughput.TOKENS_PER_S]:.0f}"}
    return shown | ({"mfu": f"{metrics[Throughput.MFU]:.1%}"} if Throughput.MFU in metrics else {})


def _checkpoint(run: Prepared, signals: StepSignals, stop_at: int) -> None:
    """Save a checkpoint every ``train.checkpoint_every`` steps and at ``stop_at``; at the step a signal
    arrived in, save one (if not saved already) and hand the signal over."""
    step, t, accelerator = run.state.step, run.cfg.train, run.accelerator
    saved = step % t.checkpoint_every == 0 or step == stop_at
    if saved:
        save_checkpoint(accelerator, run.folder, step, run.states)
    if _signalled(accelerator, signals, step, t.log_every, stop_at):
        if not saved:
            save_checkpoint(accelerator, run.folder, step, run.states)
        caught = signals.caught.name if signals.caught else "another process's signal"
        _say(accelerator, f"{caught} at step {step}: checkpoint saved there")
        signals.hand_over()


def _finish(run: Prepared, tracker: Tracker | None, evaluate: bool) -> dict[str, float] | None:
    """The end of a run that trained its last step: the mask figures and (on the main process, if asked) the
    final evaluation, with their artifacts; -> the evaluation."""
    if tracker is not None:
        for path in run.stats.figures(run.folder):
            tracker.log_artifact(path, RunFolder.MASKS)
    results = None
    if evaluate and run.accelerator.is_main_process:
        results = _evaluate(run.network, run.cfg, run.setup, run.folder, tracker)
    run.accelerator.wait_for_everyone()
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


def _end(tracker: Tracker | None, status: str) -> None:
    if tracker is not None:
        tracker.end(status)


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


def _evaluate(model: FourM, cfg: Config, setup: Setup, folder: RunFolder, tracker: Tracker | None) -> dict[str, float]:
    from model.evaluate import evaluate
    from model.tasks import eval_metric, skipped_tasks

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
        tracker.log_metrics({eval_metric(k): v for k, v in results.items()}, cfg.train.steps)
        tracker.log_artifact(folder.eval)
        if folder.generation.is_file():  # drawn only on a generated data set
            tracker.log_artifact(folder.generation)
        if skipped := skipped_tasks(setup.specs, cfg.data.root):
            tracker.set_tags({"eval_skipped": "; ".join(f"{task}: {why}" for task, why in skipped.items())})
    return results
