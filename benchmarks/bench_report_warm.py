"""A warm `ablate report` over a quickstart-like finished study: 3 masking families x 2 seeds, five evaluation
metrics, a loss curve and a realized-mask figure per run (``bench_report.py``'s filler).

Setup (not timed): the study and its MLflow store in a temporary folder, and a first report. Timed: two more
`ablate report` processes with nothing changed in the store (wall and CPU seconds). Checked: whether the second
leaves every file of the report byte-identical and untouched (modification times), and whether it writes anything
under the study's folder (``studies/``).

Run: .venv/bin/python benchmarks/bench_report_warm.py DATA_ROOT [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml
from bench_report import METRICS, Filler, timed

from ablate.study_file import load_study


def files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` -> (bytes, modification time in ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "studies" / "warm.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump({
            "name": "warm", "description": "quickstart-like", "seeds": [0, 1],
            "base": {"model": "tiny", "data.root": str(Path(args.data_root).resolve()), "train.steps": 40},
            "grid": {"masking": ["random", "dirichlet_4m", "block"]},
            "report": {"baseline": {"masking": "random"}, "metrics": [m for m in METRICS if m.startswith("eval/")]},
        }, sort_keys=False))
        study = load_study(path)
        Filler(study, args.data_root, Path(tmp)).record(study.runs)
        out = Path(tmp) / "report"
        cold = timed(path, out)
        warm = []
        for _ in range(args.repeat):
            report, store = files(out), files(study.dir)
            warm.append(timed(path, out))
        after, store_after = files(out), files(study.dir)
    same_bytes = all(after.get(k, (None,))[0] == v[0] for k, v in report.items()) and after.keys() == report.keys()
    untouched = after == report
    written = sorted(k for k, v in store_after.items() if store.get(k) != v)
    print(f"first report {cold[0]:.1f} s wall, {cold[1]:.1f} s CPU")
    print("| warm report | wall s | CPU s |\n|---|---|---|")
    for i, (wall, cpu) in enumerate(warm, 1):
        print(f"| {i} | {wall:.2f} | {cpu:.2f} |")
    print(f"last warm report: {len(report)} files, byte-identical: {same_bytes}, untouched (mtimes too): {untouched}; "
          f"written under the study folder: {written or 'nothing'}")


if __name__ == "__main__":
    main()
