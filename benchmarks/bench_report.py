"""`ablate report` over a 1,000-run study: 4 masking families x 50 input budgets x 5 seeds.

Setup (not timed): a study file in a temporary folder and its MLflow store, filled through the MLflow
client the way the submitter and the trainer leave it (the ledger's tags, a 40-point train/loss curve, six
final evaluation metrics, the realized-mask figure), 10 runs held back. Timed, each as a fresh
`ablate report` process (wall and CPU seconds; the machine is shared, CPU time is the steadier number):

    cold       no snapshot, no cached study: expands the study (a Hydra compose per configuration)
    snapshot   cached study, no snapshot: reads all 990 runs from MLflow
    warm       snapshot current, store unchanged: nothing to read again
    5 new      5 held-back runs finished since the last report, right after it: the search for new runs
               also returns every run created in the 2 minutes before that report (here most of them)
    5 more     5 more runs finished, the last report more than 2 minutes after the others were created

Run: .venv/bin/python benchmarks/bench_report.py DATA_ROOT [--budgets 50] [--seeds 5]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from mlflow.entities import Metric
from tqdm import tqdm

from ablate.ledger import Ledger
from ablate.snapshot import CLOCK_MARGIN_MS
from ablate.study import Run, Study
from ablate.study_file import load_study
from model.dataset import DatasetSpec
from model.mask_stats import MaskStats
from model.run_folder import RunFolder

FAMILIES = ["random", "dirichlet", "block", "aligned"]
METRICS = {"eval/loss/mean": 2.0, "eval/acc/mean": 0.55, "eval/rgb_to_semseg/miou": 0.3,
           "eval/rgb_to_depth/delta1": 0.8, "eval/rgb_to_caption/attr_acc": 0.2, "probe/count_acc": 0.4}
HELD_BACK = 10


def write_study(folder: Path, data_root: str, budgets: int, seeds: int, tracking_uri: str | None = None) -> Path:
    """The study file in ``folder``, tracked at ``tracking_uri`` (None: its own SQLite file)."""
    study = {"name": "bench", "description": "1,000 runs", "seeds": list(range(seeds)),
             "base": {"model": "tiny", "data.root": data_root, "train.steps": 40},
             "grid": {"masking": FAMILIES, "masking.input_budget": list(range(64, 64 + 2 * budgets, 2))},
             "report": {"baseline": {"masking": "random", "masking.input_budget": 64},
                        "metrics": [m for m in METRICS if m.startswith("eval/")]}}
    if tracking_uri is not None:
        study["tracking"] = {"uri": tracking_uri}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


class Filler:
    """Records a study's runs in its store the way the submitter and the trainer leave them: the ledger's tags,
    a 40-point train/loss curve, six final evaluation metrics, the realized-mask figure (``scratch``: where the
    figure is drawn)."""

    def __init__(self, study: Study, data_root: str, scratch: Path):
        self.ledger = Ledger(study)
        self.parent = self.ledger.parent_id()
        self.rng = np.random.default_rng(0)
        self.mask_figure = MaskStats(DatasetSpec.load(data_root).modalities).figures(RunFolder(scratch))[1]

    def record(self, runs: list[Run], progress: str | None = None) -> None:
        """Each of ``runs`` created and finished (``progress``: a progress bar with that title)."""
        client = self.ledger.client
        for run in tqdm(runs, desc=progress, unit="run") if progress else runs:
            run_id = self.ledger.prepare(run, None, self.parent, {}).run_id
            client.log_artifact(run_id, str(self.mask_figure), RunFolder.MASKS)
            effect = FAMILIES.index(run.family) * 0.01 + run.config["masking"]["input_budget"] * 1e-4
            curve = [Metric("train/loss", 5.0 * np.exp(-step / 100) + effect, 0, step) for step in range(0, 400, 10)]
            final = [Metric(k, v + effect + self.rng.normal(0, 0.01), 0, 400) for k, v in METRICS.items()]
            client.log_batch(run_id, metrics=curve + final, synchronous=True)
            client.set_terminated(run_id, "FINISHED")


def timed(path: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one `ablate report`."""
    return timed_ablate("report", str(path), "--out", str(out))


def timed_ablate(*args: str) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, of the process and its children) of one fresh `ablate ARGS`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("ablate")), *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def drop_snapshot(study: Study) -> None:
    """Remove what the last report read from the store, keeping the expanded study (``snapshot/study.pkl``)."""
    shutil.rmtree(study.dir / "snapshot" / "artifacts", ignore_errors=True)
    for part in ("runs", "metrics", "curves"):
        (study.dir / "snapshot" / f"{part}.parquet").unlink()
    (study.dir / "snapshot" / "state.json").unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root")
    ap.add_argument("--budgets", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_study(Path(tmp), str(Path(args.data_root).resolve()), args.budgets, args.seeds)
        study = load_study(path)
        filler = Filler(study, args.data_root, Path(tmp))
        held = study.runs[-HELD_BACK:]
        filler.record(study.runs[:-HELD_BACK], progress="filling MLflow")
        out = Path(tmp) / "report"
        results = {"cold": timed(path, out)}
        drop_snapshot(study)
        results["snapshot"] = timed(path, out)
        results["warm"] = timed(path, out)
        filler.record(held[:5])
        results["5 new"] = timed(path, out)
        time.sleep(CLOCK_MARGIN_MS / 1000)
        timed(path, out)  # a report some time later: nothing new, the snapshot notes that it is current
        filler.record(held[5:])
        results["5 more"] = timed(path, out)
    print(f"{len(study.runs)} runs ({len(study.runs) // args.seeds} configurations x {args.seeds} seeds)")
    print("| report | wall s | CPU s |\n|---|---|---|")
    for name, (wall, cpu) in results.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
