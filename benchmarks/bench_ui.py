"""`ablate ui` over a finished study: time until the page answers, processes and memory, Ctrl-C to exit.

Each command is started as a shell's foreground job would be (its own process group) with ``--no-browser``.
Timed: from the start to the printed address with the server answering the study's experiment (ready); then the
process count and summed RSS of everything it started (psutil), then SIGINT to its group, as Ctrl-C in a
terminal sends, until the last of its processes is gone. ``--python`` runs another checkout's `ablate`
(e.g. the code before a change) on the same study, so before and after are measured side by side.

Run: .venv/bin/python benchmarks/bench_ui.py STUDY_FILE [--python OTHER/.venv/bin/python ...] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(python: str, study: str) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryFile("w+") as out:
        start = time.monotonic()
        ui = subprocess.Popen([python, "-m", "ablate.cli", "ui", study, "--port", str(port), "--no-browser"],
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        name = Path(study).stem
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"
        while True:
            assert ui.poll() is None, "ablate ui exited"
            out.seek(0)
            if "MLflow UI for" in out.read():
                try:
                    with urllib.request.urlopen(api, timeout=5):
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        ready = time.monotonic() - start
        time.sleep(2)  # what it runs once settled
        group = [psutil.Process(ui.pid), *psutil.Process(ui.pid).children(recursive=True)]
        rss = sum(p.memory_info().rss for p in group if p.is_running())
        stop = time.monotonic()
        os.killpg(ui.pid, signal.SIGINT)
        ui.wait(timeout=120)
        while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in group):
            time.sleep(0.05)
        stopped = time.monotonic() - stop
        out.seek(0)
        lines = len(out.read().splitlines())
    return {"ready_s": ready, "processes": len(group), "rss_mb": rss / 2**20, "ctrl_c_s": stopped,
            "exit": ui.returncode, "terminal_lines": lines}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("study")
    p.add_argument("--python", action="append", default=[], help="another checkout's interpreter (repeatable)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    pythons = [*args.python, sys.executable]
    print(f"load average {os.getloadavg()}")
    for i in range(args.repeat):  # interleaved: before and after see the same load
        for python in pythons:
            cwd = Path(python).absolute().parents[2] if ".venv" in python else Path.cwd()
            os.chdir(cwd)
            m = measure(python, str(Path(args.study).resolve()))
            print(f"{cwd.name:12s} run {i}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                        for k, v in m.items()), flush=True)


if __name__ == "__main__":
    main()
