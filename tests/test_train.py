"""Training: resume gives the same run, data parallel gives the same update, bad input stops early."""

import ast
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from safetensors.torch import load_file
from study_files import wait_for

from ablate.cli import main
from ablate.tracking import run_tracker
from model.checkpoint import load_run, saved_states
from model.config import compose, group_options
from model.dataset import DatasetSpec
from model.evaluate import evaluate, trivial_baselines
from model.lease import RunFolderLeased
from model.mask_stats import MaskStats
from model.run_folder import RunFolder
from model.train import TrainOptions, logged_metrics, train

TINY = ["model=tiny", "train.batch_size=8", "train.log_every=1", "train.warmup_steps=2", "train.lr=1e-3"]


def _cfg(data_root, tmp_path, *extra):
    root, _ = data_root
    return compose([f"data.root={root}", f"train.out_dir={tmp_path}/run", f"tracking.uri=sqlite:///{tmp_path}/ml.db",
                    *TINY, *extra])


def _quiet(**options) -> TrainOptions:
    """No evaluation, no progress bar."""
    return TrainOptions(evaluate_at_end=False, progress=False, **options)


def _losses(run_dir):
    return [json.loads(line)["train/loss"] for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_stop_and_resume_matches_an_uninterrupted_run_and_continues_the_mlflow_run(data_root, tmp_path):
    whole = _cfg(data_root, tmp_path / "a", "train.steps=6")
    train(whole, _quiet(open_tracker=run_tracker))

    parts = _cfg(data_root, tmp_path / "b", "train.steps=6", "train.checkpoint_every=100")
    train(parts, _quiet(until_step=3, open_tracker=run_tracker))
    run_dir = tmp_path / "b" / "run"
    assert RunFolder(run_dir).latest_checkpoint().name == "step_0000003"
    run_id = (run_dir / "mlflow_run_id").read_text()
    train(parts, _quiet(open_tracker=run_tracker))

    assert len(_losses(run_dir)) == 6
    assert _losses(run_dir) == pytest.approx(_losses(tmp_path / "a" / "run"), rel=1e-5)
    assert (run_dir / "mlflow_run_id").read_text() == run_id
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/b/ml.db")
    runs = client.search_runs([client.get_experiment_by_name("nano4m").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    whole_client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/a/ml.db")
    (whole_run,) = whole_client.search_runs([whole_client.get_experiment_by_name("nano4m").experiment_id])
    timing = ("train/tokens_per_s", "train/tflops")
    # Losses, learning rate and the mask statistics (checkpointed too) end as if never interrupted.
    assert {k: v for k, v in runs[0].data.metrics.items() if k not in timing} == \
        {k: v for k, v in whole_run.data.metrics.items() if k not in timing}
    assert runs[0].data.params["model.dim"] == "64"
    assert "config.yaml" in [a.path for a in client.list_artifacts(run_id)]


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


class Killed(Exception):
    pass


def _killed_at(step: int):
    def after_step(done: int, model) -> None:
        if done == step:
            raise Killed  # after that step's checkpoint, with the next batches already masked by the thread

    return after_step


@pytest.mark.parametrize("masking", ["dirichlet", "block"])
def test_prefetched_batches_train_as_inline_ones_and_a_killed_prefetching_run_resumes_exactly(
        data_root, tmp_path, masking):
    """The background thread masks ahead with the same generator; the checkpoint keeps its state as of the
    batches trained on (block: T5 spans; the schedule follows the step each batch is made for)."""
    common = ["train.steps=6", "tracking.enabled=false", f"masking={masking}", "train.checkpoint_every=2",
              "masking.mask_ratio={schedule: linear, start: 0.3, end: 0.7}"]
    train(_cfg(data_root, tmp_path / "inline", *common, "train.feed=inline"), _quiet())
    train(_cfg(data_root, tmp_path / "ahead", *common, "train.feed=prefetch"), _quiet())
    parts = _cfg(data_root, tmp_path / "parts", *common, "train.feed=prefetch")
    with pytest.raises(Killed):
        train(parts, _quiet(after_step=_killed_at(2)))
    train(parts, _quiet())

    inline = _losses(tmp_path / "inline" / "run")
    assert len(inline) == 6
    assert _losses(tmp_path / "ahead" / "run") == inline  # the same masks, bit for bit
    assert _losses(tmp_path / "parts" / "run") == pytest.approx(inline, rel=1e-5)
    inline_states, parts_states = (saved_states(tmp_path / name / "run/checkpoints/step_0000006")
                                   for name in ("inline", "parts"))
    # The masking RNG and statistics were saved at step 2 as of the batches trained on, not as far as masked.
    assert torch.equal(inline_states["train"]["mask_rng"], parts_states["train"]["mask_rng"])
    inline_stats, parts_stats = inline_states["mask_stats"], parts_states["mask_stats"]
    assert inline_stats["samples"] == parts_stats["samples"] == 6 * 8
    for role in ("input", "target"):
        for name, counts in inline_stats["counts"][role].items():
            assert torch.equal(counts, parts_stats["counts"][role][name])


def test_prefetching_is_refused_for_a_masking_that_learns_from_the_last_steps_losses(data_root, tmp_path, capsys):
    args = ["train", f"data.root={data_root[0]}", "model=tiny", f"train.out_dir={tmp_path}/run", "masking=hard",
            "train.feed=prefetch"]
    assert main(args) == 2
    assert "train.feed=prefetch: the 'hard' masking learns from the last step's losses" in capsys.readouterr().err


def test_throughput_in_tokens_tflops_and_mfu_is_logged(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path, "train.steps=4", "train.log_every=2", "train.peak_tflops=0.5",
               "tracking.enabled=false")
    train(cfg, _quiet())
    history = _history(tmp_path / "run")
    assert [h["step"] for h in history] == [2, 4]
    for h in history:
        assert h["train/tokens_per_s"] > 0 and h["train/tflops"] > 0
        assert h["train/mfu"] == pytest.approx(h["train/tflops"] / 0.5)
    # Without a peak (a CPU, no train.peak_tflops) there is no MFU, but the achieved rate is still logged.
    train(_cfg(data_root, tmp_path / "b", "train.steps=1", "tracking.enabled=false"), _quiet())
    (only,) = _history(tmp_path / "b" / "run")
    assert "train/mfu" not in only and only["train/tflops"] > 0


class Recorder:
    """A tracker that keeps the metrics it is given, and how the run ended."""

    def __init__(self):
        self.metrics: dict[str, list[int]] = {}
        self.status: str | None = None

    def log_metrics(self, metrics, step):
        for k in metrics:
            self.metrics.setdefault(k, []).append(step)

    def log_artifact(self, path, artifact_path=None):
        pass

    def set_tags(self, tags):
        pass

    def end(self, status):
        self.status = status


def test_a_run_logs_exactly_the_metrics_logged_metrics_names(data_root, tmp_path):
    """Studies check objectives, pruner metrics and report columns against ``logged_metrics``: it must be what a run
    logs, to the tracker at every logging step and (less the mask statistics) to its history."""
    cfg = _cfg(data_root, tmp_path, "train.steps=4", "train.log_every=2", "train.peak_tflops=0.5")
    tracker = Recorder()
    train(cfg, _quiet(open_tracker=lambda cfg: tracker))
    names = logged_metrics(DatasetSpec.load(data_root[0]).modalities)
    assert len(names) == len(set(names))
    assert tracker.metrics == {name: [2, 4] for name in names} and tracker.status == "FINISHED"
    to_history = sorted(["step", *(name for name in names if not name.startswith(MaskStats.PREFIX))])
    assert [sorted(h) for h in _history(tmp_path / "run")] == [to_history] * 2


def test_no_function_of_the_training_loop_is_over_60_lines():
    """``train`` reads in phases (prepare, the step loop, finish), each a function one can read at once."""
    path = Path(__file__).parents[1] / "model" / "train.py"
    functions = [f for f in ast.walk(ast.parse(path.read_text()))
                 if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    assert len(functions) > 10
    long = {f.name: f.end_lineno - f.lineno + 1 for f in functions if f.end_lineno - f.lineno + 1 > 60}
    assert not long, f"model/train.py: functions over 60 lines: {long}"


def test_a_compiled_trunk_trains_as_the_eager_one(data_root, tmp_path):
    common = ["train.steps=3", "tracking.enabled=false", "train.threads=1"]
    train(_cfg(data_root, tmp_path / "eager", *common), _quiet())
    train(_cfg(data_root, tmp_path / "compiled", *common, "train.compile=true"), _quiet())
    # Inductor fuses and reorders float operations: equal up to rounding, not bit for bit.
    assert _losses(tmp_path / "compiled" / "run") == pytest.approx(_losses(tmp_path / "eager" / "run"), rel=1e-3)


def test_a_checkpoint_killed_mid_write_is_ignored(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path, "train.steps=4", "tracking.enabled=false")
    train(cfg, _quiet(until_step=2))
    run_dir = tmp_path / "run"
    partial = run_dir / "checkpoints" / "step_0000003"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    assert RunFolder(run_dir).latest_checkpoint().name == "step_0000002"
    train(cfg, _quiet())
    assert len(_losses(run_dir)) == 4


def test_two_process_data_parallel_gives_the_same_update_as_one_process(data_root, tmp_path):
    root, _ = data_root
    common = [f"data.root={root}", "model=tiny", "train.steps=3", "masking=random", "model.loss_weighting=token",
              "tracking.enabled=false", "train.warmup_steps=0", "--no-eval"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    subprocess.run([*torchrun, "-m", "ablate.cli", "train", *common, "train.batch_size=8",
                    f"train.out_dir={tmp_path}/ddp"], check=True, env=env, capture_output=True)
    assert main(["train", *common, "train.batch_size=16", f"train.out_dir={tmp_path}/single"]) == 0
    two = load_file(tmp_path / "ddp/checkpoints/step_0000003/model.safetensors")
    one = load_file(tmp_path / "single/checkpoints/step_0000003/model.safetensors")
    # Adam turns rounding noise in near-zero gradients into +-lr steps; a wrong batch split moves far more.
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 5e-4
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "single"), rel=1e-4)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stpes=5", "unknown config key 'train.stpes'; allowed keys under 'train'"),
        ("masking.input_alphas.rgb=-1", "masking.input_alphas.rgb=-1"),
        ("masking.input_budget=100000", "masking.input_budget=100000: must be an integer from 1 to"),
        ("masking=blocky", "masking"),
        ("data.root=/nonexistent/data", "/nonexistent/data: no such data folder"),
    ],
)
def test_bad_input_stops_before_training_with_a_message(data_root, tmp_path, capsys, override, message):
    out = tmp_path / "run"
    args = ["train", f"data.root={data_root[0]}", "model=tiny", f"train.out_dir={out}", override]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_training_lowers_the_loss(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path, "train.steps=40", "tracking.enabled=false", "train.log_every=1")
    train(cfg, _quiet())
    losses = torch.tensor(_losses(tmp_path / "run"))  # one batch of 8 per step: compare means of 10 steps
    assert len(losses) == 40 and torch.isfinite(losses).all()
    assert losses[-10:].mean() < 0.9 * losses[:10].mean()


def test_a_few_hundred_tiny_steps_learn_rgb_to_semseg_and_depth_beyond_the_trivial_constants(data_root, tmp_path):
    """The cross-modal tasks the reports measure are learned, not only the token statistics: rgb in,
    semseg and depth out, 300 steps of ``tiny``, scored like every run's final evaluation."""
    only = "{rgb: %s, depth: %s, semseg: %s, caption: 0, boxes: 0}"
    cfg = _cfg(data_root, tmp_path, "train.steps=300", "train.batch_size=24", "train.warmup_steps=30",
               "train.lr=2e-3", "tracking.enabled=false", "train.log_every=50",
               f"masking.input_alphas={only % (1000, 0, 0)}", f"masking.target_alphas={only % (0, 1, 1)}")
    model_dir = tmp_path / "run"
    train(cfg, _quiet())
    model, _, specs = load_run(model_dir)
    metrics = evaluate(model, specs, data_root[0], num_samples=200, probe_samples=0,
                       tasks=["rgb_to_semseg", "rgb_to_depth"])
    trivial = trivial_baselines(data_root[0], num_samples=200)
    assert metrics["rgb_to_semseg/miou"] > trivial["rgb_to_semseg/miou"] + 0.1, (metrics, trivial)
    assert metrics["rgb_to_depth/abs_rel"] < 0.75 * trivial["rgb_to_depth/abs_rel"], (metrics, trivial)


FAMILIES = group_options()["masking"]  # every preset


@pytest.mark.parametrize("family", FAMILIES)
def test_every_masking_family_trains_without_nan(data_root, tmp_path, family):
    """60 steps of ``tiny`` per family preset: finite losses that fall (every preset's last five logged losses
    are 0.61-0.65 of its first at 60 steps, 2026-12-03; 200 steps bought nothing more for this claim)."""
    cfg = _cfg(data_root, tmp_path, f"masking={family}", "train.steps=60", "train.batch_size=16",
               "train.log_every=4", "train.warmup_steps=6", "tracking.enabled=false")
    train(cfg, _quiet())
    losses = torch.tensor(_losses(tmp_path / "run"))
    assert len(losses) == 15 and torch.isfinite(losses).all()
    assert losses[-5:].mean() < 0.8 * losses[0]


@pytest.fixture
def scheduler_handler():
    """SIGUSR2's handler for the test, as submitit's (requeue the job, exit); -> the signals it was called with."""
    handed = []

    def handler(signum, frame):
        handed.append(signum)
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, handler)
    yield handed
    signal.signal(signal.SIGUSR2, previous)


def _warn_at(at: int):
    """An ``after_step`` that sends the process SIGUSR2 after step ``at``, as SLURM warns a job."""
    def after_step(step, model):
        if step == at:
            os.kill(os.getpid(), signal.SIGUSR2)
    return after_step


def test_a_signal_mid_run_checkpoints_that_step_hands_over_and_the_resumed_run_trains_no_step_twice(
        data_root, tmp_path, capfd, scheduler_handler):
    train(_cfg(data_root, tmp_path / "a", "train.steps=6"), _quiet())
    cfg = _cfg(data_root, tmp_path / "b", "train.steps=6", "train.checkpoint_every=100")
    installed = signal.getsignal(signal.SIGUSR2)
    with pytest.raises(SystemExit):
        train(cfg, _quiet(after_step=_warn_at(2), checkpoint_on=(signal.SIGUSR2,)))
    assert scheduler_handler == [signal.SIGUSR2] and signal.getsignal(signal.SIGUSR2) is installed
    run_dir = tmp_path / "b" / "run"
    assert RunFolder(run_dir).latest_checkpoint().name == "step_0000003"  # the step the signal arrived in, not step 0
    train(cfg, _quiet(checkpoint_on=(signal.SIGUSR2,)))
    log = capfd.readouterr().err
    assert "train: SIGUSR2 at step 3: checkpoint saved there" in log and "resuming at step 3" in log
    assert re.findall(r"trained steps (\d+)-(\d+)", log) == [("1", "6"), ("1", "3"), ("4", "6")]  # a, then b twice
    assert _losses(run_dir) == pytest.approx(_losses(tmp_path / "a" / "run"), rel=1e-5)


def test_a_second_trainer_on_a_leased_run_folder_exits_untouched_and_a_killed_holders_lease_is_taken_over(
        data_root, tmp_path):
    overrides = [f"data.root={data_root[0]}", f"train.out_dir={tmp_path}/run", "tracking.enabled=false", *TINY,
                 "train.steps=100000", "train.checkpoint_every=2", "train.threads=1"]
    holder = subprocess.Popen([sys.executable, "-m", "ablate.cli", "train", "--no-eval", *overrides],
                              stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "run"
    try:
        wait_for(lambda: RunFolder(run_dir).latest_checkpoint(), "the first trainer's checkpoint")
        lease = json.loads((run_dir / "lease.json").read_text())
        assert lease["holder"]["pid"] == holder.pid
        written = (run_dir / "config.yaml").stat().st_mtime_ns
        with pytest.raises(RunFolderLeased, match=f"another trainer holds this run folder \\(pid {holder.pid} on"):
            train(compose(overrides), _quiet())
        assert (run_dir / "config.yaml").stat().st_mtime_ns == written  # not rewritten
        assert json.loads((run_dir / "lease.json").read_text())["holder"] == lease["holder"]  # not taken
        assert holder.poll() is None  # and the holder trains on
    finally:
        holder.kill()  # no chance to give the lease back
        holder.wait()
    assert (run_dir / "lease.json").is_file()
    resumed_at = RunFolder.step_of(RunFolder(run_dir).latest_checkpoint())
    train(compose(overrides), _quiet(until_step=resumed_at + 1))
    assert RunFolder(run_dir).latest_checkpoint().name == f"step_{resumed_at + 1:07d}"
    assert not (run_dir / "lease.json").exists()


def test_a_signal_during_the_last_step_is_handed_over_before_the_evaluation(data_root, tmp_path, scheduler_handler):
    cfg = _cfg(data_root, tmp_path, "train.steps=3", "tracking.enabled=false")
    with pytest.raises(SystemExit):  # not swallowed while the evaluation would outlast the warning
        train(cfg, TrainOptions(progress=False, after_step=_warn_at(3), checkpoint_on=(signal.SIGUSR2,)))
    assert scheduler_handler == [signal.SIGUSR2]
    assert RunFolder(tmp_path / "run").latest_checkpoint().name == "step_0000003"
    assert not (tmp_path / "run" / "eval.json").exists()
