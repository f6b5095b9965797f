"""Training through a real MLflow server on PostgreSQL that goes away: the server is killed while a study's runs
train and started again 10 s later; the runs finish without error, and every metric history equals that of the
same study tracked through a server that never went away (values too, but for wall-clock rates)."""

from __future__ import annotations

import threading
import time

from mlflow.tracking import MlflowClient
from study_files import TINY, wait_for, write_study

from ablate.dispatch import submit
from ablate.ledger import Ledger
from ablate.outbox import unsent_count
from ablate.study_file import load_study
from model.flops import Throughput

OUTAGE_S = 10  # long enough for the runs to log into their outboxes and back off (1, 2, 4, 8 s)


def _histories(study) -> dict[tuple[int, str], list[tuple[int, float]]]:
    """(seed, metric) -> [(step, value)] of every metric of every run of the study."""
    ledger = Ledger(study, create=False)
    client: MlflowClient = ledger.client
    out = {}
    for run in study.runs:
        record = ledger.records()[run.key]
        assert record.status == "FINISHED"
        for key in client.get_run(record.run_id).data.metrics:
            out[run.seed, key] = sorted((m.step, m.value) for m in client.get_metric_history(record.run_id, key))
    return out


def test_runs_outlive_a_server_restart_and_end_with_the_history_of_runs_that_saw_none(tmp_path, data_root,
                                                                                    mlflow_server):
    base = {**TINY, "train.steps": 40, "train.checkpoint_every": 20, "data.root": str(data_root[0])}
    calm, storm = (load_study(write_study(tmp_path, data_root, name=name, seeds=[0, 1], base=base,
                                          tracking={"uri": mlflow_server.uri}))
                   for name in ("calm", "storm"))
    assert set(submit(calm, progress=False).values()) == {"done"}

    outcome = {}
    submitter = threading.Thread(target=lambda: outcome.update(submit(storm, progress=False)))
    submitter.start()
    wait_for(lambda: any((r.progress()[0] or 0) >= 2 for r in storm.runs), "training step 2", timeout_s=300)
    mlflow_server.stop(kill=True)
    time.sleep(OUTAGE_S)
    assert any(unsent_count(run.folder) for run in storm.runs)  # the runs logged on, into their outboxes
    mlflow_server.start()
    submitter.join(timeout=600)

    assert not submitter.is_alive() and set(outcome.values()) == {"done"}
    assert all(unsent_count(run.folder) == 0 for run in storm.runs)
    said = "".join(log.read_text() for log in (storm.dir / "submitit").rglob("*.err"))  # the runs' stderr
    assert "does not answer" in said and "answers again" in said
    calm_history, storm_history = _histories(calm), _histories(storm)
    assert {k for k, _ in calm_history} == {0, 1} and any(k[1] == "train/loss" for k in calm_history)
    assert {k: [s for s, _ in h] for k, h in storm_history.items()} == {k: [s for s, _ in h]
                                                                       for k, h in calm_history.items()}
    # the same values, but for the wall-clock rates (tokens/s, TFLOP/s), which no two runs share
    clocked = set(Throughput.NAMES)
    assert ({k: h for k, h in storm_history.items() if k[1] not in clocked}
            == {k: h for k, h in calm_history.items() if k[1] not in clocked})
