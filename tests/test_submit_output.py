"""What ``ablate submit`` says and exits with: a line per run event (not redrawn bars) when its output is a file,
the failure said last with its cause and log tail, exit codes that say how the study ended; and a job warned
before it trained a step failing with that reason instead of being requeued."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from study_files import LOCAL, TINY, write_study

from ablate import cli, progress
from ablate.dispatch import NoProgress, TrainJob
from ablate.study_file import load_study
from model.run_folder import RunFolder


def _submit(path, tmp_path, *extra: str) -> tuple[int, str, str, float]:
    """``ablate submit`` with stdout and stderr piped to files, as in a CI log; -> (exit code, out, err, s)."""
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    start = time.monotonic()
    with out.open("w") as o, err.open("w") as e:
        code = subprocess.run([sys.executable, "-m", "ablate.cli", "submit", str(path), *extra], stdout=o,
                              stderr=e, timeout=600).returncode
    return code, out.read_text(), err.read_text(), time.monotonic() - start


def test_piped_to_a_file_submit_writes_a_line_per_run_event_and_a_periodic_summary(data_root, tmp_path):
    base = {**TINY, "data.root": str(data_root[0]), "train.steps": 60}  # some seconds each: bars would redraw
    path = write_study(tmp_path, data_root, base=base, seeds=[0, 1])
    code, out, err, took = _submit(path, tmp_path)
    assert code == 0, err
    assert "\r" not in err and "\x1b" not in err  # no bar redrawn in place
    lines = err.splitlines()
    runs = load_study(path).runs
    events = [f"s: {run.label} s{run.seed} {what}" for run in runs for what in ("launched", "done")]
    assert sorted(line for line in lines if line in events) == sorted(events)  # each once
    summaries = [line for line in lines if re.match(r"s: \d+/2 runs ended", line)]
    assert len(summaries) <= took // progress.SUMMARY_S
    ours = [line for line in lines if line.startswith("s: ") or "step/s" in line or "run/s" in line]
    assert len(ours) == 1 + len(events) + len(summaries), err  # the study's first line, events, summaries
    assert "reports/s" in out


def test_a_summary_every_summary_s_and_bars_only_on_a_terminal(monkeypatch, tmp_path):
    run = SimpleNamespace(key="k", label="masking=random", seed=0, config={"train": {"steps": 10}},
                          progress=lambda: (3, 1.5))
    said: list[str] = []
    monkeypatch.setattr(progress, "say", said.append)
    monkeypatch.setattr(progress, "SUMMARY_S", 0.0)
    with progress.Progress("s", 2, 0, "run", evaluate=False) as shown:
        assert not shown.bars and shown.lines  # pytest's stderr is no terminal
        shown.count(0, active=1)
        shown.show({"k": SimpleNamespace(run=run, job=object())})
        shown.ended(run, "done")
    assert said == ["s: masking=random s0 launched", "s: 0/2 runs ended, active=1; masking=random s0 step 3/10",
                    "s: masking=random s0 done"]
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    with progress.Progress("s", 2, 0, "run", evaluate=False) as shown:
        assert shown.bars and not shown.lines and shown.study_bar is not None


def test_a_run_that_fails_for_good_is_said_last_and_the_study_exits_1(data_root, tmp_path, monkeypatch, capfd):
    broken = tmp_path / "broken"  # whole when the study is checked, broken before its job starts
    shutil.copytree(data_root[0], broken)
    path = write_study(tmp_path, data_root, base={**TINY, "data.root": str(broken)},
                       executor={**LOCAL, "max_retries": 0})
    study = load_study(path)
    (run,) = study.runs
    (broken / "train" / "rgb.npy").unlink()
    monkeypatch.setattr(cli, "_study", lambda args: study)  # checked whole: `ablate submit` would refuse it now
    code = cli.main(["submit", str(path)])
    out, err = capfd.readouterr()
    assert code == cli.EXIT_FAILED == 1
    said = next(line for line in err.splitlines() if line.startswith(f"run {run.key} ({run.label}) failed: "))
    cause = said.split(" failed: ", 1)[1]
    assert re.match(r"[\w.]*DataFormatError: \S*rgb\.npy: missing", cause)  # the cause first, not a log path
    assert "no report: " in out  # the report cannot be made: said, but not last
    last = err.splitlines()[-8:]
    head = f"run {run.key} ({run.label} s0) failed after 0 retries: model.dataset.DataFormatError: "
    assert any(line.startswith(head) and "rgb.npy: missing" in line for line in last), err
    assert any(line.startswith("  its log ") and line.endswith("_log.err ends:") for line in last)
    assert last[-1].startswith("s: 1 of 1 runs failed for good (exit 1)")


def test_a_search_whose_trials_fail_exits_1_with_them_said_last(data_root, tmp_path, monkeypatch, capfd):
    broken = tmp_path / "broken"  # whole when the study is checked, broken before its trials make their runs
    shutil.copytree(data_root[0], broken)
    search = {"params": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}, "trials": 2,
              "metric": "train/loss", "sampler": "random", "seed": 0}
    path = write_study(tmp_path, data_root, base={**TINY, "data.root": str(broken)}, search=search,
                       executor={**LOCAL, "max_retries": 0})
    study = load_study(path)
    (broken / "train" / "rgb.npy").unlink()
    monkeypatch.setattr(cli, "_study", lambda args: study)
    code = cli.main(["submit", str(path)])
    out, err = capfd.readouterr()
    assert code == cli.EXIT_FAILED == 1, (out, err)
    assert out.startswith("2 trials: 2 fail")
    last = err.splitlines()[-3:]
    assert last[-1] == "s: 2 trials made no run (exit 1)"
    assert all(re.match(r"trial [01] \{'train.lr': [\d.e-]+\}: .*rgb\.npy: missing", line) for line in last[:2])


def test_a_job_warned_before_its_first_step_fails_with_that_reason_instead_of_requeueing(tmp_path):
    folder = RunFolder(tmp_path / "run")
    job = TrainJob({"train": {"out_dir": str(folder.path)}})
    with pytest.raises(NoProgress, match="before it trained a step .*executor.timeout_min"):
        job.checkpoint()  # a fresh run warned before its first checkpoint
    folder.checkpoint(2).mkdir(parents=True)
    folder.point_latest(folder.checkpoint(2))
    requeued = job.checkpoint()  # it trained to step 2: requeued from there
    assert requeued.function.start_step == 2
    with pytest.raises(NoProgress, match="checkpoint step 2 at its start and at the warning"):
        requeued.function.checkpoint()
