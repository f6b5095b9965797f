"""The seconds and bytes of ``ablate plan``, ``ablate status`` and a refused study, each a fresh process, timed with
``/usr/bin/time`` (wall seconds, max RSS), for one or more ``ablate`` executables side by side (``--ablate``: this
checkout's and, say, another checkout's, to compare before and after a change: each call of one is followed by
the same call of the others, so that they see the same load).

The studies, written into WORKDIR (set-up, not timed):
- ``quickstart``: ``studies/quickstart.yaml`` on DATA_ROOT, its six runs recorded in its MLflow store as
  finished (tags and logged tokens/s, as the submitter and trainer leave them);
- ``fresh``: the same study with nothing recorded, so plan must time the model itself (in an empty user cache);
- ``refused``: the quickstart with a masking name misspelled;
- ``plan10k``: the tiny model, a SIDE x SIDE grid (train.lr x masking.input_budget), one seed, every other run
  recorded as finished.

"cold" is the first call after the study file, the code or the data set changed (nothing kept, the study
checked whole); "warm" the calls after it. Each row's median over ``--repeats`` calls.

Run: .venv/bin/python benchmarks/bench_plan.py DATA_ROOT [--ablate .venv/bin/ablate OTHER/.venv/bin/ablate]
     [--workdir DIR] [--side 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from mlflow.entities import Metric
from tabulate import tabulate
from tqdm import tqdm

from ablate import study_cache
from ablate.ledger import Ledger
from ablate.study import Study
from ablate.study_file import load_study

QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"


def write_studies(workdir: Path, data_root: str, side: int) -> dict[str, Path]:
    quickstart = yaml.safe_load(QUICKSTART.read_text())
    quickstart["base"]["data.root"] = data_root
    refused = {**quickstart, "grid": {"masking": ["random", "dirichlet_4n", "block"]}}
    plan10k = {"name": "plan10k", "base": {"model": "tiny", "data.root": data_root, "train.steps": 100},
               "evaluate": False, "report": {"metrics": ["train/loss"]},
               "grid": {"train.lr": [round(1e-4 * (i + 1), 6) for i in range(side)],
                        "masking.input_budget": list(range(1, side + 1))}}
    studies = {"quickstart": quickstart, "fresh": {**quickstart, "name": "fresh"}, "refused": refused,
               "plan10k": plan10k}
    paths = {}
    for name, study in studies.items():
        paths[name] = workdir / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(study, sort_keys=False))
    return paths


def record_finished(study: Study, every: int) -> None:
    """Every ``every``-th run as a finished MLflow child run, tagged as the submitter tags it."""
    ledger = Ledger(study)
    parent, known = ledger.parent_id(), ledger.records()
    for run in tqdm(study.runs[::every], desc=f"{study.name}: filling the store", unit="run"):
        if run.key in known:
            continue
        record = ledger.prepare(run, None, parent, {"executor": "local", "job_id": "1"})
        ledger.client.log_batch(record.run_id, metrics=[Metric("train/tokens_per_s", 20_000.0, 0, 100),
                                                        Metric("train/loss", 3.0, 0, 100)])
        ledger.client.set_terminated(record.run_id, "FINISHED")


def timed(command: str, args: list[str], env: dict[str, str], expect: int = 0) -> tuple[float, float]:
    """Wall seconds and max RSS (MB) of one call."""
    with tempfile.NamedTemporaryFile("r") as out:
        done = subprocess.run(["/usr/bin/time", "-o", out.name, "-f", "%e %M", command, *args], env=env,
                              capture_output=True, text=True)
        assert done.returncode == expect, f"{command} {args}: exit {done.returncode}\n{done.stderr[-2000:]}"
        wall, kb = out.read().split()[-2:]
    return float(wall), int(kb) / 1024


def floors(quickstart: Path, repeats: int) -> list[list]:
    """What any plan or status pays before its own work: Python, the imports and opening the MLflow store."""
    study = load_study(quickstart, expand=False)
    overrides = {"model": "tiny", "data.root": study.spec.base["data.root"]}
    probes = {"python -c pass": "pass",
              "import the study reader (pydantic, hydra, numpy), compose one config":
                  f"from ablate.study import fitted; import ablate.study_file; fitted({overrides!r})",
              "import mlflow's client": "from mlflow.tracking import MlflowClient",
              "import it, open the quickstart's SQLite store (search its experiments)":
                  f"from mlflow.tracking import MlflowClient; MlflowClient({study.store.uri!r}).search_experiments()",
              "import torch": "import torch"}
    rows = []
    for what, code in probes.items():
        calls = [timed(sys.executable, ["-c", code], dict(os.environ)) for _ in range(repeats)]
        rows.append(["floor", what, statistics.median(c[0] for c in calls), max(c[1] for c in calls),
                     ", ".join(f"{c[0]:.2f}" for c in calls)])
        print(tabulate([rows[-1]], tablefmt="plain"), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root")
    ap.add_argument("--ablate", nargs="+", default=[str(Path(sys.executable).with_name("ablate"))],
                    help="ablate executables to compare (default: this environment's)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "nano4m-bench-plan")
    ap.add_argument("--side", type=int, default=100, help="plan10k's grid side: side x side configurations")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = write_studies(args.workdir, str(Path(args.data_root).resolve()), args.side)
    record_finished(load_study(paths["quickstart"]), 1)
    record_finished(load_study(paths["plan10k"]), 2)

    rows = floors(paths["quickstart"], args.repeats)
    env = {**os.environ, "XDG_CACHE_HOME": str(args.workdir / "cache")}

    def cold(name: str) -> None:
        """Nothing kept: neither the checked study nor a timed speed."""
        (study_cache.folder(load_study(paths[name], expand=False)) / "study.pkl").unlink(missing_ok=True)
        shutil.rmtree(args.workdir / "cache", ignore_errors=True)

    size = f"{args.side**2:,} configurations"
    cases = [("plan quickstart, cold", "quickstart", cold, args.repeats),
             ("plan quickstart, warm", "quickstart", None, args.repeats),
             ("status quickstart", "quickstart", None, args.repeats),
             ("plan, nothing run (times the model), cold", "fresh", cold, args.repeats),
             ("plan, nothing run, warm", "fresh", None, args.repeats),
             ("a refused study (plan)", "refused", None, args.repeats),
             (f"plan {size}, cold", "plan10k", cold, 1), (f"plan {size}, warm", "plan10k", None, 1)]
    for what, name, before, repeats in cases:
        calls: dict[str, list[tuple[float, float]]] = {ablate: [] for ablate in args.ablate}
        for _ in range(repeats):  # the executables in turn, so that each sees the same load
            for ablate in args.ablate:
                if before:
                    before(name)
                command = ["status" if what.startswith("status") else "plan", str(paths[name])]
                calls[ablate].append(timed(ablate, command, env, expect=2 if name == "refused" else 0))
        for ablate, measured in calls.items():
            rows.append([ablate, what, statistics.median(c[0] for c in measured), max(c[1] for c in measured),
                         ", ".join(f"{c[0]:.2f}" for c in measured)])
            print(tabulate([rows[-1]], tablefmt="plain"), flush=True)
    print(tabulate(rows, headers=["ablate", "command", "wall s (median)", "max RSS MB", "calls (s)"],
                   tablefmt="github", floatfmt=".2f"))


if __name__ == "__main__":
    main()
