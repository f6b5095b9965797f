"""Framework overhead of a study on the local executor: from `ablate submit` starting to the run's first
logged training step, with where the time goes.

Each repeat is a fresh one-run study (its own folder and MLflow store). Phases, from time stamps the run
leaves anyway:

    submit -> job submitted    the CLI starts, validates the study, opens its MLflow store, pickles the job
                               (mtime of submitit's <job>_submitted.pkl)
    -> job started             submitit's local controller and the job's interpreter start ("Starting with
                               JobEnvironment" in the job log)
    -> first step logged       the job imports torch and the model, loads the data, builds the model and
                               the MLflow run, trains step 1 (MLflow time stamp of train/loss at step 1)

Run: .venv/bin/python benchmarks/bench_submit.py DATA_ROOT [--model tiny] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from ablate.study_file import load_study

ABLATE = Path(sys.executable).with_name("ablate")
PHASES = ("submit -> job submitted", "-> job started", "-> first step logged", "total")
_STARTED = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - Starting with JobEnvironment")


def one_run(folder: Path, data_root: str, model: str) -> dict[str, float]:
    path = folder / "overhead.yaml"
    path.write_text(yaml.safe_dump({
        "name": "overhead", "base": {"model": model, "data.root": data_root, "train.steps": 2, "train.log_every": 1},
        "evaluate": False, "executor": {"kind": "local", "threads_per_run": 1},
        "report": {"metrics": ["train/loss"]}}))
    start = time.time()
    subprocess.run([str(ABLATE), "submit", str(path)], check=True, capture_output=True)
    study = load_study(path)
    (submitted,) = (study.dir / "submitit").glob("*/*_submitted.pkl")
    (log,) = (study.dir / "submitit").glob("*/*_log.out")
    started = datetime.datetime.strptime(_STARTED.search(log.read_text()).group(1), "%Y-%m-%d %H:%M:%S,%f")
    client = MlflowClient(study.store.client_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("overhead").experiment_id], "tags.kind = 'run'")
    first = min(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    times = [start, submitted.stat().st_mtime, started.timestamp(), first.timestamp / 1000]
    return dict(zip(PHASES, [b - a for a, b in zip(times, times[1:])] + [times[-1] - start]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    results = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(one_run(Path(tmp), str(Path(args.data_root).resolve()), args.model))
    for phase in PHASES:
        values = [r[phase] for r in results]
        print(f"{phase:26s} median {statistics.median(values):5.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
