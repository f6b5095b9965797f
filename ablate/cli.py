"""The ``ablate`` command line. Each subcommand is a small function; overrides are ``key=value``.

Each command imports what it needs when it runs (torch and MLflow take seconds to import), so ``--help``
and a refused study answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPORTS = Path("reports")
EPILOG = "Overrides are Hydra-style key=value pairs, e.g. data.train_size=2000 data.scene.canvas=32."

# What ``ablate`` exits with (``submit --help`` and docs/studies.md say the same).
EXIT_FAILED = 1  # a run failed for good (its retries spent); also a run folder trained elsewhere
EXIT_REFUSED = 2  # the input was refused (a study, a config, a store, a busy port), as argparse's usage errors
EXIT_UNFINISHED = 3  # runs were cancelled, interrupted or are unknown: `ablate submit` again resumes them
EXIT_CODES = (f"Exit status: 0 every run finished (or, SLURM without --wait, the runs are queued); {EXIT_FAILED} "
              f"a run failed for good (its retries spent; its cause and log tail are the last lines); "
              f"{EXIT_REFUSED} the study or a setting was refused; {EXIT_UNFINISHED} runs were cancelled or "
              "interrupted (also Ctrl-C) or their scheduler does not answer: submitting again resumes them.")


def data_build(args: argparse.Namespace) -> None:
    from model.build import build, fidelity_table
    from model.config import compose

    cfg = compose(args.overrides).data
    fidelity = build(cfg, force=args.force)
    print(f"\nData set written to {Path(cfg.root).resolve()}\n")
    print("Tokenizer round-trip fidelity on the validation split:\n")
    print(fidelity_table(fidelity))


def data_show(args: argparse.Namespace) -> None:
    from model.config import compose
    from model.show import show

    cfg = compose(args.overrides).data
    out = show(cfg.root, args.out or Path(cfg.root) / "show.png", num_scenes=args.scenes)
    print(f"wrote {out}")


def train(args: argparse.Namespace) -> None:
    from ablate.tracking import run_tracker
    from model.config import compose
    from model.train import TrainOptions
    from model.train import train as run_training

    cfg = compose(args.overrides)
    results = run_training(cfg, TrainOptions(evaluate_at_end=not args.no_eval, open_tracker=run_tracker))
    if not args.no_eval:
        from model.dataset import DatasetSpec
        from model.evaluate import eval_table
        from model.run_folder import RunFolder
        from model.tasks import skipped_tasks

        print("\n" + eval_table(results))
        for task, why in skipped_tasks(DatasetSpec.load(cfg.data.root).modalities, cfg.data.root).items():
            print(f"not evaluated: {task}: {why}")
        print(f"\nevaluation written to {RunFolder(cfg.train.out_dir).eval}")


def masking(args: argparse.Namespace) -> None:
    from tabulate import tabulate

    from model.config import compose, group_options
    from model.masking import STRATEGIES
    from model.masking.describe import as_yaml, families_table, parameter_table, write_presets_and_docs

    if args.write:
        written = write_presets_and_docs()
        print(f"wrote {', '.join(str(path) for path in written)}")
        return
    print(families_table() + "\n\n" + parameter_table() + "\n")
    rows = []
    for name in group_options()["masking"]:
        if name not in STRATEGIES:
            preset = dict(compose([f"masking={name}"]).masking)
            family = preset.pop("name")
            rows.append((name, family, ", ".join(f"{k}={as_yaml(v)}" for k, v in preset.items())))
    print(tabulate(rows, headers=["preset", "family", "sets"], tablefmt="github"))


def generate(args: argparse.Namespace) -> None:
    from model.generation_figure import draw_generation

    path = draw_generation(args.run, args.out, args.given, args.targets, first=args.first, scenes=args.scenes,
                           steps=args.steps, seed=args.seed)
    print(f"wrote {path}")


def _study(args: argparse.Namespace, expand: bool = True, strategies: bool = True):
    """The study, checked, and its tracking store answering (a ``StoreError`` before anything is launched)."""
    from ablate.study_file import find_study_file, load_study

    return _answering(load_study(find_study_file(args.study), expand=expand, strategies=strategies))


def _checked(args: argparse.Namespace):
    """The study checked whole (reused from ``ablate/study_cache.py`` while current), its store answering before
    the cache writes into the study folder; a refused study names every problem, not its schema's alone."""
    from ablate import study_cache
    from ablate.schema import StudyError
    from ablate.study_file import find_study_file, load_study

    path = find_study_file(args.study)
    try:
        head = load_study(path, expand=False)
    except StudyError:
        load_study(path)  # raises with the problems of both rounds
        raise
    _answering(head)
    return study_cache.load(path)


def _answering(study):
    """The study, once its store (and a search's database) answer; else a one-line ``StoreError``."""
    from ablate.store import StoreError

    try:
        study.store.check()
    except StoreError as e:
        raise StoreError(f"{study.path}: tracking: {e}") from None
    return study


def plan(args: argparse.Namespace) -> None:
    study = _checked(args)
    from ablate.overview import plan_table

    print(plan_table(study))


def submit(args: argparse.Namespace) -> int | None:
    study = _study(args)
    try:
        return _submit(study, args)
    except KeyboardInterrupt:
        print(f"\nstopped. `ablate submit {args.study}` again follows what still runs, resumes what was "
              f"interrupted and launches the rest; `ablate cancel {args.study}` stops what still runs.",
              file=sys.stderr)
        return EXIT_UNFINISHED


def _submit(study, args: argparse.Namespace) -> int | None:
    if study.spec.search is not None:
        from ablate.search import Search, summary

        search = Search(study)
        print(summary(search.run()))
        if search.cancelled:
            print(f"cancelled; `ablate submit {args.study}` asks the interrupted trials again", file=sys.stderr)
            return EXIT_UNFINISHED
        failed = _failed_for_good(study, args.study, list(search.failed.values()), "trial runs")
        if search.unmade:  # said last too: no run, so no log to show
            print("\n".join(search.unmade), file=sys.stderr)
            print(f"{study.name}: {len(search.unmade)} trials made no run (exit {EXIT_FAILED})", file=sys.stderr)
            return EXIT_FAILED
        return failed
    if study.spec.race is not None:
        from ablate.race import submit_race

        states, race = submit_race(study, wait=args.wait, progress=True)
        over = race.status != "racing"
    else:
        from ablate.dispatch import submit as submit_runs

        states = submit_runs(study, wait=args.wait)
        over = all(s in ("done", "failed") for s in states.values())
    if unknown := sum(s == "unknown" for s in states.values()):
        print(f"{unknown} run(s) unknown: their scheduler does not answer (squeue failed); left alone, neither "
              f"relaunched nor failed: `ablate submit {args.study}` again once it answers", file=sys.stderr)
        return EXIT_UNFINISHED
    failed = [run for run in study.runs if states.get(run.key) == "failed"]
    if over:
        print(_report_of_ended(study, args.study, failed))
    elif "interrupted" in states.values():
        print(f"cancelled; `ablate submit {args.study}` resumes the interrupted runs and launches the rest")
        return EXIT_UNFINISHED
    else:
        print(f"submitted; watch with `ablate status {args.study}` or `ablate ui {args.study}`")
    return _failed_for_good(study, args.study, failed, f"of {len(states)} runs")


def _failed_for_good(study, named: str, failed: list, among: str) -> int | None:
    """Said last, as what the researcher has to look at: each run that failed for good (its cause and log
    tail) and a count; ``EXIT_FAILED`` if there is any."""
    if not failed:
        return None
    from ablate.dispatch import failure
    from ablate.ledger import Ledger

    records = Ledger(study).records()
    for run in failed:
        print(failure(study, run, records[run.key]), file=sys.stderr)
    print(f"{study.name}: {len(failed)} {among} failed for good (exit {EXIT_FAILED}); fix the cause, then "
          f"`ablate submit {named}` retries them up to executor.max_retries", file=sys.stderr)
    return EXIT_FAILED


def _report_of_ended(study, named: str, failed: list) -> str:
    """The report once every run has ended; with failed runs, a report that cannot be made (a metric no
    finished run logged) is said in a line, before the failures."""
    from ablate.report import report_once_ended
    from ablate.schema import StudyError

    try:
        return report_once_ended(study, REPORTS / study.name, named)
    except StudyError as e:
        if not failed:
            raise
        return f"no report: {e}"


def report(args: argparse.Namespace) -> None:
    from ablate.report import make_report, report_spec

    study = _checked(args)
    options = {"metrics": args.metrics, "rows": args.rows, "columns": args.columns, "precision": args.precision,
               "caption": args.caption, "label": args.label, "correction": args.correction, "alpha": args.alpha,
               "baseline": dict(args.baseline) if args.baseline else None}
    print(make_report(study, report_spec(study, options), args.out or REPORTS / study.name,
                      figures=not args.no_figures))


def key_value(text: str) -> tuple[str, object]:
    """``masking=random`` -> ("masking", "random"); the value is read as YAML, as in a study file."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected key=value, e.g. masking=random")
    return key, yaml.safe_load(value)


def status(args: argparse.Namespace) -> None:
    from ablate import study_cache
    from ablate.study_file import find_study_file, load_study

    # its runs' keys and folders: as plan or report last checked it, else expanded without building a masking
    # strategy (no torch)
    path = find_study_file(args.study)
    study = _answering(study_cache.cached(path) or load_study(path, strategies=False))
    from ablate.overview import status_table

    print(status_table(study))


def cancel(args: argparse.Namespace) -> None:
    study = _study(args, expand=False)  # its store is all it needs: the ledger names the jobs
    from ablate.ledger import Ledger
    from ablate.states import cancel_live_jobs

    stopped = cancel_live_jobs(list(Ledger(study, create=False).records().values()))
    print(f"{study.name}: cancelled {stopped} queued or running runs; `ablate submit {args.study}` resumes them")


def migrate(args: argparse.Namespace) -> None:
    study = _study(args, expand=False)  # its store and name are all it needs
    from ablate.migrate import migrate as copy_records

    print(copy_records(study, args.to))


def ui(args: argparse.Namespace) -> int:
    from ablate.mlflow_ui import serve

    study = _study(args, expand=False)  # the store is all it needs: no data set
    return serve(study, args.port, open_browser=not args.no_browser, named=args.study)


def explore(args: argparse.Namespace) -> None:
    import torch

    from ablate.explorer.explorer import Explorer
    from ablate.explorer.server import serve

    torch.set_num_threads(args.threads)
    explorer = Explorer(_study(args), reports=args.reports)
    print(f"explorer for {explorer.study.name} on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    serve(explorer, args.host, args.port)


def server(args: argparse.Namespace) -> None:
    from ablate.mlflow_ui import ServerError
    from ablate.server import ServerSpec, start, stop

    if args.stop:
        stop(args.state, args.port)
        return
    if args.database is None or args.artifacts is None:
        raise ServerError("ablate server needs a database URI and --artifacts PATH (or --stop)")
    start(ServerSpec(args.database, args.artifacts, serve_artifacts=args.serve_artifacts, host=args.host,
                     port=args.port, workers=args.workers, auth=args.auth, state=args.state,
                     allowed_hosts=tuple(name for names in args.allowed_hosts for name in names.split(",") if name)))


def parser() -> argparse.ArgumentParser:
    from ablate.states import RUN_STATES

    p = argparse.ArgumentParser(
        prog="ablate", description="nano4M: pre-train small 4M models and ablate their masking."
    )
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or look at the generated multimodal data set")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    b = data_sub.add_parser(
        "build",
        help="render scenes, fit tokenizers, write tokens and a fidelity report into data.root",
        epilog=EPILOG,
    )
    b.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    b.add_argument("--force", action="store_true", help="rebuild even if data.root holds this recipe already")
    b.set_defaults(func=data_build)
    s = data_sub.add_parser(
        "show", help="write a PNG: each modality decoded from its tokens next to its ground truth", epilog=EPILOG
    )
    s.add_argument("overrides", nargs="*", help="config overrides (key=value), e.g. data.root=...")
    s.add_argument("--out", type=Path, help="PNG path (default: DATA_ROOT/show.png)")
    s.add_argument("--scenes", type=int, default=4, help="how many validation scenes (default 4)")
    s.set_defaults(func=data_show)
    t = sub.add_parser(
        "train",
        help="pre-train a nano4M model on data.root, evaluate it, track it in MLflow",
        description="Train (or resume, if train.out_dir holds a checkpoint) one model, then evaluate it.",
        epilog="Example: ablate train model=nano masking=dirichlet masking.input_alphas.rgb=0.5 train.steps=2000. "
        "Config groups: model=tiny|nano|base, masking=<family or preset> (`ablate masking` lists them). " + EPILOG,
    )
    t.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    t.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    t.set_defaults(func=train)

    m = sub.add_parser(
        "masking", help="the masking families, their parameters and defaults, and the presets",
        description="Every masking family (masking=<family>) with its parameters: default, whether the family's "
        "preset states it (then it is part of every run's config and run key) and what it means; then the named "
        "presets of model/conf/masking/ and what they set. Every family also takes mask_ratio (docs/masking.md).")
    m.add_argument("--write", action="store_true",
                   help="instead, rewrite each family's preset (model/conf/masking/<family>.yaml) and the parameter "
                   "table of docs/masking.md from the families (after adding or changing one)")
    m.set_defaults(func=masking)

    g = sub.add_parser(
        "generate",
        help="generate modalities from others with a trained run; writes a PNG",
        description="Any-to-any generation on validation scenes: ROAR for images, autoregressive for sequences, "
        "chained in the order given (each generated modality becomes an input of the next).",
    )
    g.add_argument("run", type=Path, help="a run folder (train.out_dir of `ablate train`)")
    g.add_argument("--given", nargs="+", default=["rgb"], help="input modalities (default: rgb)")
    g.add_argument("--targets", nargs="+", default=["semseg", "depth", "caption"], help="modalities to generate")
    g.add_argument("--scenes", type=int, default=4, help="how many validation scenes (default 4)")
    g.add_argument("--first", type=int, default=0, help="index of the first validation scene")
    g.add_argument("--steps", type=int, default=8, help="ROAR steps per image modality (default 8)")
    g.add_argument("--seed", type=int, default=0, help="generation seed")
    g.add_argument("--out", type=Path, default=Path("generation.png"), help="PNG path (default generation.png)")
    g.set_defaults(func=generate)

    study_help = "a study YAML file, or the name of one in studies/"
    pl = sub.add_parser("plan", help="list a study's runs: settings, state, estimated cost",
                        description="Validate a study and list every run it has: what varies, its seed, its state "
                        "(done, running, queued, failed, interrupted, pruned, missing; unknown while a SLURM "
                        "controller does not answer) and an estimated cost. For a race: where it stands (each "
                        "configuration racing, eliminated at which look, or the winner) and what its next look "
                        "waits for.")
    pl.add_argument("study", help=study_help)
    pl.set_defaults(func=plan)
    su = sub.add_parser("submit", help="run what a study is missing (resume interrupted runs, retry failed ones)",
                        description="Launch the missing runs of a study, resume interrupted ones from their "
                        "checkpoints and retry failed ones up to executor.max_retries. Finished runs are skipped. "
                        "Local and debug executors (and searches) run in the foreground until all runs end; "
                        "a SLURM study returns once submitted unless --wait. While waiting it shows the study's "
                        "progress and one bar per active run (step, speed, time left, loss). A race (race: in the "
                        "study) runs in rounds: every configuration on the first race.min_seeds seeds, then one "
                        "more seed per round for those not significantly worse than another, until one is left; "
                        "on SLURM each round is one job array, and without --wait submit launches the round the "
                        "race is at and returns.", epilog=EXIT_CODES)
    su.add_argument("study", help=study_help)
    su.add_argument("--wait", action="store_true",
                    help="SLURM: wait for the runs (a race: run its rounds until it ends), then write and print the "
                    "report")
    su.set_defaults(func=submit)
    r = sub.add_parser(
        "report", help="a study's table (Markdown, LaTeX), statistics and figures, written to reports/STUDY/",
        description="Aggregate a study's finished runs over seeds (mean, sd, n of planned), compare every "
        "configuration with the baseline (paired t-test over shared seeds, else Welch; Holm or Benjamini-Hochberg "
        "across the table), bold the best value of each metric and mark the values not significantly different "
        "from it. Writes table.md, table.tex (booktabs), summary.csv and figures (PDF and PNG). Runs are read from "
        "the study's MLflow store into studies/NAME/snapshot/ (only what changed is read again). Options replace "
        "the keys of the study's report: section for this report.",
        epilog="Example: ablate report quickstart --columns masking.input_budget --correction bh --precision 2")
    r.add_argument("study", help=study_help)
    r.add_argument("--metrics", nargs="+", help="metrics to compare (default: report.metrics)")
    r.add_argument("--rows", nargs="+", help="settings that form the rows (default: those not in --columns)")
    r.add_argument("--columns", nargs="+", help="settings that form grouped column headers (default: none)")
    r.add_argument("--baseline", nargs="+", type=key_value, metavar="KEY=VALUE",
                   help="settings or overrides that pick the baseline configuration (default: report.baseline, "
                   "else the study's first configuration)")
    r.add_argument("--correction", choices=["holm", "bh"], help="multiple-comparison correction (default holm)")
    r.add_argument("--alpha", type=float, help="significance level after correction (default 0.05)")
    r.add_argument("--precision", type=int, help="digits after the decimal point (default 3)")
    r.add_argument("--caption", help="table caption (default: the study's description)")
    r.add_argument("--label", help="LaTeX label (default tab:STUDY)")
    r.add_argument("--out", type=Path, help="output folder (default reports/STUDY)")
    r.add_argument("--no-figures", action="store_true", help="tables and summary only")
    r.set_defaults(func=report)
    st = sub.add_parser("status", help="a study's runs with their state, progress (step/total) and the checkpoint "
                        "each resumes from", description="One row per run: its state (" + ", ".join(RUN_STATES) +
                        "; see ablate/states.py), the last logged step, the checkpoint step it resumes from, "
                        "its last train/loss and its job id.")
    st.add_argument("study", help=study_help)
    st.set_defaults(func=status)
    ca = sub.add_parser("cancel", help="stop a study's queued and running jobs (they resume on the next submit)")
    ca.add_argument("study", help=study_help)
    ca.set_defaults(func=cancel)
    mi = sub.add_parser(
        "migrate", help="copy a study's MLflow records into an MLflow server or a PostgreSQL database",
        description="Copy the study's experiment, its parent run and every run (params, tags, names, statuses, "
        "start and end times, every metric's history with its steps and timestamps, artifacts) from its store "
        "into the one at --to, then print the tracking: section that makes the study use it. The copies get new "
        "run ids (the ledger finds runs by their run key); the study's own store and folder are left as they "
        "are. Running it again copies only what is missing. Refused before anything is copied: a run that may "
        "still run, a URI with a password, a store that does not answer or refuses the credentials.",
        epilog="Example: PGPASSWORD=... ablate migrate budgets --to http://login1:5000 (see docs/studies.md, "
        "Moving a study to a server)")
    mi.add_argument("study", help=study_help)
    mi.add_argument("--to", required=True, metavar="URI", help="http(s)://HOST:PORT of an MLflow server, or "
                    "postgresql://USER@HOST:PORT/DB; no password in it: MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD, PGPASSWORD or PGPASSFILE")
    mi.set_defaults(func=migrate)
    u = sub.add_parser("ui", help="open the MLflow UI on a study's store (bound to 127.0.0.1)",
                       description="Serve MLflow's UI over the study's store and print the address of the study's "
                       "runs table (opened in a browser where there is a display). Ctrl-C or SIGTERM stops it.")
    u.add_argument("study", help=study_help)
    u.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    u.add_argument("--no-browser", action="store_true", help="print the address only")
    u.set_defaults(func=ui)
    ex = sub.add_parser(
        "explore", help="a local web page: what each strategy's best model sees, predicts and attends to",
        description="Serve a page over a finished study: pick a scene (held-out, new from a seed, a typed "
        "caption, your own PNG or JPEG, or an image with a typed caption), what is given and predicted, paint a "
        "hidden region, and compare side by side each masking's predictions, scores, time, confidence, attention "
        "and encoder features. Each masking is represented by its "
        "best finished run by the study's objective: the search metric (and direction) of a search study, else "
        "the first of report.metrics in its direction (model/tasks.py).")
    ex.add_argument("study", help=study_help)
    ex.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    ex.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ex.add_argument("--reports", type=Path, default=REPORTS,
                    help="folder holding the reports of `ablate report` (default reports/; the page links "
                    "REPORTS/STUDY/)")
    ex.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: the page's forward passes are small; more threads contend)")
    ex.set_defaults(func=explore)
    from ablate.server import STATE

    sv = sub.add_parser(
        "server", help="start or stop an MLflow tracking server over PostgreSQL for a lab or a cluster",
        description="Start `mlflow server` over a PostgreSQL database, detached, and print the tracking.uri to "
        "put in studies. First the database must answer (a host that does not answer, a refused password, a "
        "missing database: one line, nothing started); one that already holds MLflow's tables is brought to this "
        "MLflow's schema (mlflow db upgrade, said when done). The password never goes in the URI: libpq and the "
        "server read PGPASSWORD or PGPASSFILE. One server per port: starting it again while it runs says so. Its "
        f"pid file (server-PORT.json), log (server-PORT.log) and auth settings live in --state (default {STATE}).",
        epilog="Example: PGPASSWORD=... ablate server postgresql://mlflow@db.lab:5432/mlflow --artifacts "
        "/shared/mlflow-artifacts --host 0.0.0.0 --port 5000 --workers 4; then in the study: tracking: {uri: "
        "http://THIS-HOST:5000}; and to stop it: ablate server --stop --port 5000. Cluster setup: slurm/README.md.")
    sv.add_argument("database", nargs="?", help="postgresql://USER@HOST:PORT/DB, no password in it")
    sv.add_argument("--artifacts", type=Path, help="artifact folder: served by the server (default), or with "
                    "--no-serve-artifacts the path every client writes to itself (a shared file system)")
    sv.add_argument("--no-serve-artifacts", dest="serve_artifacts", action="store_false",
                    help="clients read and write --artifacts directly instead of through the server")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                    "0.0.0.0: every interface, for the nodes of a cluster)")
    sv.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    sv.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2); the connection "
                    "pools are sized to them and to PostgreSQL's max_connections")
    sv.add_argument("--allowed-hosts", action="append", default=[], metavar="NAMES",
                    help="more Host names clients use, comma-separated (a name without :PORT gets --port); "
                    "--host's own names are always allowed, MLflow refuses any other")
    sv.add_argument("--auth", action="store_true", help="MLflow basic authentication (the .[server] extra): users "
                    "in the same database, the first admin's password from MLFLOW_AUTH_ADMIN_PASSWORD; clients set "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    sv.add_argument("--state", type=Path, default=STATE, help=f"pid file, log and auth settings (default {STATE})")
    sv.add_argument("--stop", action="store_true", help="stop the server on --port (all its processes) and wait")
    sv.set_defaults(func=server)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    # argparse stops filling a nargs="*" positional at the first flag; overrides after flags land here.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides += extra
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    from ablate.mlflow_ui import ServerError
    from ablate.schema import StudyError
    from ablate.store import StoreError
    from model.config import ConfigError
    from model.dataset import DataFormatError
    from model.lease import RunFolderLeased

    try:
        return args.func(args) or 0
    except (ConfigError, DataFormatError, StudyError, StoreError, ServerError, FileNotFoundError) as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except RunFolderLeased as e:  # not bad input: the run is being trained elsewhere
        print(f"ablate: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
