"""Tracking stores side by side: a study's SQLite file against an MLflow server (`ablate server`) on PostgreSQL.

Both stores are made fresh by this run: SQLite files in a temporary folder, and a new database on the
PostgreSQL of `scripts/start_postgres.sh` (created from the `--postgres` database, dropped at the end) with an
`ablate server` over it (its default workers unless `--workers`; artifacts served from the temporary folder).
Timed, SQLite then the server in each measurement:

    throughput  W writer processes per store (forked, one run folder each), each a `RunTracker` as the trainer
                holds it: its run created before a barrier, then S `log_metrics` calls of M metrics (the
                trainer's first M names; one call = the outbox append and one `log_batch` request), all
                released at once. Wall time from the release until the last writer's last call; metric rows/s
                and requests/s over it (as logged: a call whose request fails returns, its records wait); each
                call's latency (median, p95, max); requests that failed or ran past `tracking.request_timeout`
                (10 s), and calls after which records waited in the outbox; CPU seconds in the window of the
                writers, the server's processes, and PostgreSQL's backends of its database (with backends of
                any database that ended meanwhile). Then each writer ends its run (`RunTracker.end`: up to
                `DRAIN_S` for the store to take what waits): the drain time until the last has ended, the
                records still unsent then, and the metric rows counted in the store's own tables (every (run,
                key, step) once; rows missing are those still unsent), per second of wall and drain time
                (stored rows/s).
    report      `ablate report` over a 1,000-run study (`bench_report.py`'s study and store filler: 990 runs
                recorded, not timed) on each store, as fresh processes, with `--no-figures` (what the store
                costs): cold (no snapshot, study not yet expanded), snapshot (study cached, every run read from
                the store), warm (store unchanged); then warm with its figures (the whole report). For the
                server, also the CPU seconds its processes and PostgreSQL's spent meanwhile.
    status      `ablate status` over the same study, twice (fresh processes).

Each measurement first waits (at most `--max-wait` s) for a 1-minute load average under `--quiet-load` and
prints the load average before and after it. On one machine the writers, the server and the database share
its cores: the CPU seconds per request say what each side costs.

Run (PostgreSQL up: `bash scripts/start_postgres.sh`; its password from PGPASSWORD or PGPASSFILE):
    PGPASSWORD=nano4m .venv/bin/python benchmarks/bench_tracking.py DATA_ROOT [--writers 1 16 64] [--steps 100]
        [--metrics 20] [--workers N] [--parts throughput report status]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import sqlalchemy
from bench_report import HELD_BACK, Filler, drop_snapshot, timed_ablate, write_study

from ablate import store
from ablate.outbox import unsent_count
from ablate.server import ServerSpec, running, start, stop
from ablate.study_file import load_study
from ablate.tracking import RunTracker, ensure_experiment
from model.dataset import DatasetSpec
from model.run_folder import RunFolder
from model.train import logged_metrics

# MLflow prints a run's URL on stdout for every run a server ends: 64 lines per measurement.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

STORES = ("sqlite", "server")
PARTS = ("throughput", "report", "status")
# An experiment's metric rows, its distinct (run, key, step) among them (equal: no step twice), its runs.
COUNT_ROWS = sqlalchemy.text(
    "SELECT COUNT(*), COUNT(DISTINCT m.run_uuid || '|' || m.key || '|' || CAST(m.step AS VARCHAR(20))), "
    "COUNT(DISTINCT m.run_uuid) FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
    "JOIN experiments e ON e.experiment_id = r.experiment_id WHERE e.name = :name")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def wait_for_quiet(limit: float, max_wait: float) -> str:
    """Wait until the 1-minute load average is under ``limit`` (at most ``max_wait`` s); -> the load then."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(10)
    return load()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu(process: psutil.Process, reaped: bool = False) -> float:
    """User + system CPU seconds of ``process`` (``reaped``: of its children that ended, instead); 0 once gone."""
    try:
        t = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.children_user + t.children_system if reaped else t.user + t.system


def server_cpu(pid: int) -> Callable[[], float]:
    """The CPU seconds so far of the server whose leader is ``pid``: its processes (uvicorn's workers are its
    children) and those of them that ended."""
    leader = psutil.Process(pid)
    return lambda: cpu(leader, reaped=True) + sum(cpu(p) for p in [leader, *leader.children(recursive=True)])


def postgres_cpu(database: str) -> Callable[[], float]:
    """The CPU seconds so far of PostgreSQL's backends serving ``database`` (process title ``postgres: USER DB
    HOST(PORT) STATE``), those still open and, through the postmaster, every backend that ended: the server's
    pools close connections beyond their size, so backends come and go under load. A backend of another
    database that ends meanwhile counts too."""
    name = database.rsplit("/", 1)[1]

    def total() -> float:
        live = [p for p in psutil.process_iter(["cmdline"])
                if (line := " ".join(p.info["cmdline"] or [])).startswith("postgres: ") and f" {name} " in line]
        return sum(cpu(p) for p in live) + (cpu(psutil.Process(live[0].ppid()), reaped=True) if live else 0.0)
    return total


def _write(uri: str, experiment: str, folder: str, names: list[str], steps: int, barriers, results) -> None:
    """One writer: a run as the trainer tracks it, then ``steps`` batches of metrics, each call timed."""
    start_barrier, done_barrier = barriers
    tracker = RunTracker(uri, experiment, RunFolder(folder), run_name=Path(folder).name)
    start_barrier.wait(timeout=600)
    latencies, deferred, failed = np.empty(steps), 0, 0
    used = resource.getrusage(resource.RUSAGE_SELF)
    for step in range(1, steps + 1):
        failures, began = tracker.failures, time.perf_counter()
        tracker.log_metrics({name: step + i / 100 for i, name in enumerate(names)}, step)
        latencies[step - 1] = time.perf_counter() - began
        failed += tracker.failures > failures  # a request failed or timed out
        deferred += tracker.failures > 0  # the store did not take it now: it waits in the outbox
    after = resource.getrusage(resource.RUSAGE_SELF)
    done_barrier.wait(timeout=3600)
    tracker.end()
    cpu_s = after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime
    results.put((latencies.tolist(), failed, deferred, cpu_s))


def count_rows(uri: str, experiment: str) -> tuple[int, int, int]:
    """(metric rows, distinct (run, key, step), runs with metrics) of ``experiment`` in the SQLite or PostgreSQL
    store ``uri``, read from MLflow's tables."""
    engine = sqlalchemy.create_engine(store.mlflow_uri(uri))
    try:
        with engine.connect() as db:
            return tuple(db.execute(COUNT_ROWS, {"name": experiment}).one())
    finally:
        engine.dispose()


def throughput(uri: str, tables: str, writers: int, steps: int, names: list[str], folder: Path,
               watched: dict[str, Callable[[], float]]) -> dict:
    """``writers`` processes logging to ``uri`` (whose tables are in ``tables``): one row of the table, with the
    CPU seconds in the window of each of ``watched`` (name -> CPU seconds so far)."""
    fork = multiprocessing.get_context("fork")  # what the writers import is imported once, here
    experiment = f"throughput-{writers}"
    setup = fork.Process(target=ensure_experiment, args=(uri, experiment))  # the submitter's part, before any job
    setup.start()
    setup.join()
    barriers, results = (fork.Barrier(writers + 1), fork.Barrier(writers + 1)), fork.Queue()
    folders = [folder / f"{experiment}-{w}" for w in range(writers)]
    processes = [fork.Process(target=_write, args=(uri, experiment, str(f), names, steps, barriers, results))
                 for f in folders]
    for process in processes:
        process.start()
    barriers[0].wait(timeout=600)
    before, began = {k: total() for k, total in watched.items()}, time.perf_counter()
    barriers[1].wait(timeout=3600)
    wall, after = time.perf_counter() - began, {k: total() for k, total in watched.items()}
    collected = [results.get(timeout=600) for _ in processes]  # each once its tracker has ended
    drain = time.perf_counter() - began - wall
    for process in processes:
        process.join()
    if failed := [p.exitcode for p in processes if p.exitcode]:
        raise SystemExit(f"{len(failed)} writers failed (exit codes {failed})")
    latencies = np.concatenate([c[0] for c in collected]) * 1000
    rows, distinct, runs = count_rows(tables, experiment)
    return {"wall": wall, "rows/s": writers * steps * len(names) / wall, "requests/s": writers * steps / wall,
            "median ms": np.median(latencies), "p95 ms": np.percentile(latencies, 95), "max ms": latencies.max(),
            "failed": sum(c[1] for c in collected), "deferred": sum(c[2] for c in collected), "drain": drain,
            "unsent": sum(unsent_count(RunFolder(f)) for f in folders), "rows": rows,
            "stored rows/s": rows / (wall + drain),
            "expected": writers * steps * len(names), "distinct": distinct, "runs": runs,
            "writers CPU": sum(c[3] for c in collected),
            **{f"{k} CPU": after[k] - before[k] for k in watched}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root", type=Path)
    ap.add_argument("--writers", type=int, nargs="+", default=[1, 16, 64], help="1: one request at a time")
    ap.add_argument("--steps", type=int, default=100, help="log_metrics calls per writer")
    ap.add_argument("--metrics", type=int, default=20, help="metrics per call (the trainer's first names)")
    ap.add_argument("--workers", type=int, default=ServerSpec.workers, help="the server's uvicorn workers")
    ap.add_argument("--postgres", default="postgresql://nano4m@127.0.0.1:5433/nano4m",
                    help="an existing database on the PostgreSQL server; the benchmark's own is created beside it")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--budgets", type=int, default=50, help="the report study: input budgets per family")
    ap.add_argument("--seeds", type=int, default=5, help="the report study: seeds")
    ap.add_argument("--quiet-load", type=float, default=2.0, help="wait for a 1-minute load average under this")
    ap.add_argument("--max-wait", type=float, default=240.0, help="seconds to wait for it at most")
    args = ap.parse_args()
    data_root = args.data_root.resolve()
    names = logged_metrics(DatasetSpec.load(data_root).modalities)[: args.metrics]
    if len(names) < args.metrics:
        raise SystemExit(f"--metrics {args.metrics}: the trainer logs {len(names)} names on this data set")

    database = f"bench_{uuid.uuid4().hex[:12]}"
    with store.connect(args.postgres) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    database_uri = f"{args.postgres.rsplit('/', 1)[0]}/{database}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = ServerSpec(database_uri, folder / "artifacts", port=free_port(), workers=args.workers,
                          state=folder / "server")
        try:
            start(spec)
            print(f"{os.cpu_count()} cores; the server: {spec.workers} uvicorn workers; PostgreSQL database {database}",
                  flush=True)
            watched = {"server": server_cpu(running(spec.state, spec.port).pid),
                       "PostgreSQL": postgres_cpu(database_uri)}
            if "throughput" in args.parts:
                _throughputs(args, names, folder, {"sqlite": f"sqlite:///{folder}/throughput.db", "server": spec.url},
                             {"sqlite": {}, "server": watched}, database_uri)
            if {"report", "status"} & set(args.parts):
                _report_and_status(args, data_root, folder, spec.url, watched)
        finally:
            stop(spec.state, spec.port)
            with store.connect(args.postgres) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _throughputs(args: argparse.Namespace, names: list[str], folder: Path, uris: dict[str, str],
                 watched: dict[str, dict], database_uri: str) -> None:
    """Every writer count on each store, printed as they come and as a table at the end."""
    table = []
    for writers in args.writers:
        for kind in STORES:
            load_before = wait_for_quiet(args.quiet_load, args.max_wait)
            row = throughput(uris[kind], uris[kind] if kind == "sqlite" else database_uri, writers, args.steps, names,
                             folder / "runs" / kind, watched[kind])
            row["load"] = f"{load_before} -> {load()}"
            print(f"throughput {kind} W={writers}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                             for k, v in row.items()), flush=True)
            table.append((writers, kind, row))
    print(f"\n{args.steps} calls of {len(names)} metrics per writer\n")
    print("| writers | store | wall s | metric rows/s | requests/s | call median ms | p95 ms | max ms | requests "
          "failed | calls deferred | drain s | records unsent | rows (distinct) / expected | stored rows/s | CPU s: "
          "writers, server, PostgreSQL | load before -> after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for writers, kind, r in table:
        cpu = ", ".join(f"{r[k]:.1f}" if k in r else "-" for k in ("writers CPU", "server CPU", "PostgreSQL CPU"))
        print(f"| {writers} | {kind} | {r['wall']:.1f} | {r['rows/s']:,.0f} | {r['requests/s']:.0f} | "
              f"{r['median ms']:.0f} | {r['p95 ms']:.0f} | {r['max ms']:.0f} | {r['failed']} | {r['deferred']} | "
              f"{r['drain']:.1f} | {r['unsent']} | "
              f"{r['rows']:,} ({r['distinct']:,}) / {r['expected']:,} in {r['runs']} runs | "
              f"{r['stored rows/s']:,.0f} | {cpu} | {r['load']} |")


def _report_and_status(args: argparse.Namespace, data_root: Path, folder: Path, server: str,
                       watched: dict[str, Callable[[], float]]) -> None:
    """The 1,000-run study on each store, its reports and statuses timed as fresh processes (with the CPU seconds
    of ``watched`` meanwhile, for the server)."""
    studies = {}
    for kind in STORES:
        (folder / f"study-{kind}").mkdir()
        path = write_study(folder / f"study-{kind}", str(data_root), args.budgets, args.seeds,
                           tracking_uri=server if kind == "server" else None)
        study = load_study(path)
        Filler(study, str(data_root), folder / f"study-{kind}").record(study.runs[:-HELD_BACK],
                                                                       progress=f"filling {kind}")
        studies[kind] = path, study
    table = []

    def measure(what: str, kind: str, *command: str) -> None:
        load_before = wait_for_quiet(args.quiet_load, args.max_wait)
        store_before = {k: total() for k, total in watched.items()} if kind == "server" else {}
        wall, cpu = timed_ablate(*command)
        store_cpu = ", ".join(f"{k} {total() - store_before[k]:.1f}" for k, total in watched.items() if store_before)
        table.append((what, kind, wall, cpu, store_cpu or "-", f"{load_before} -> {load()}"))
        print(f"{what} {kind}: wall {wall:.1f} s, CPU {cpu:.1f} s, store CPU {store_cpu or '-'}; load "
              f"{table[-1][-1]}", flush=True)

    if "report" in args.parts:
        for what in ("cold", "snapshot", "warm", "warm, figures"):
            for kind, (path, study) in studies.items():
                if what == "snapshot":
                    drop_snapshot(study)
                figures = [] if what.endswith("figures") else ["--no-figures"]
                measure(f"report {what}", kind, "report", str(path), "--out", str(folder / f"report-{kind}"), *figures)
    if "status" in args.parts:
        for repeat in (1, 2):
            for kind, (path, _) in studies.items():
                measure(f"status #{repeat}", kind, "status", str(path))
    print(f"\n{len(study.runs)} runs, {len(study.runs) - HELD_BACK} recorded\n")
    print("| command | store | wall s | CPU s | CPU s of the store's processes | load before -> after |\n"
          "|---|---|---|---|---|---|")
    for what, kind, wall, cpu, store_cpu, loads in table:
        print(f"| {what} | {kind} | {wall:.1f} | {cpu:.1f} | {store_cpu} | {loads} |")


if __name__ == "__main__":
    main()
