"""`ablate plan` for a 10,000-configuration study against an MLflow store that has half of its runs.

The study: the tiny model, a 100 x 100 grid (train.lr x masking.input_budget), one seed. The store: the
study's own, with every other run recorded as a finished child run (tags and logged tokens/s, as the
submitter and trainer leave them; the rest are missing). Filling the store is set-up, not timed; it is
kept in WORKDIR and reused. Timed: the whole `ablate plan` command, then its parts in this process.

Run: .venv/bin/python benchmarks/bench_plan.py DATA_ROOT [--workdir DIR] [--side 100]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from mlflow.entities import Metric
from tqdm import tqdm

from ablate.ledger import Ledger
from ablate.overview import plan_table
from ablate.study import Study
from ablate.study_file import load_study


def write_study(workdir: Path, data_root: str, side: int) -> Path:
    path = workdir / "plan10k.yaml"
    path.write_text(yaml.safe_dump({
        "name": "plan10k", "base": {"model": "tiny", "data.root": data_root, "train.steps": 100},
        "evaluate": False, "report": {"metrics": ["train/loss"]},
        "grid": {"train.lr": [round(1e-4 * (i + 1), 6) for i in range(side)],
                 "masking.input_budget": list(range(1, side + 1))}}))
    return path


def record_half(study: Study) -> None:
    """Every other run as a finished MLflow child run, tagged as the submitter tags it."""
    ledger = Ledger(study)
    parent, known = ledger.parent_id(), ledger.records()
    for run in tqdm(study.runs[::2], desc="filling the store", unit="run"):
        if run.key in known:
            continue
        record = ledger.prepare(run, None, parent, {"executor": "local", "job_id": "1"})
        ledger.client.log_batch(record.run_id, metrics=[Metric("train/tokens_per_s", 20_000.0, 0, 100),
                                                        Metric("train/loss", 3.0, 0, 100)])
        ledger.client.set_terminated(record.run_id, "FINISHED")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "nano4m-plan10k")
    ap.add_argument("--side", type=int, default=100, help="grid side: side x side configurations")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = write_study(args.workdir, str(Path(args.data_root).resolve()), args.side)
    record_half(load_study(path))

    start = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).with_name("ablate")), "plan", str(path)], check=True,
                         capture_output=True, text=True).stdout
    whole = time.perf_counter() - start
    print(f"ablate plan, {args.side**2:,} configurations: {whole:.1f} s ({len(out.splitlines()):,} lines of output)")

    t0 = time.perf_counter()
    study = load_study(path)
    t1 = time.perf_counter()
    records = Ledger(study, create=False).records()
    t2 = time.perf_counter()
    plan_table(study)
    t3 = time.perf_counter()
    print(f"  validate and expand the study: {t1 - t0:.1f} s ({len(study.runs):,} runs)")
    print(f"  read the ledger: {t2 - t1:.1f} s ({len(records):,} MLflow runs, one search_runs pass)")
    print(f"  the table (ledger read again, states, costs): {t3 - t2:.1f} s")


if __name__ == "__main__":
    main()
