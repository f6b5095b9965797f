"""Executor kinds: the schema allows exactly the registered ones, and each makes its own submitit backend."""

from __future__ import annotations

import re
import typing

import pytest
from pydantic import ValidationError

from ablate.executors import EXECUTORS
from ablate.schema import ExecutorSpec, StudySpec
from ablate.study import Study


def test_the_schema_allows_exactly_the_registered_kinds_and_names_them_when_refusing_another():
    field = ExecutorSpec.model_fields["kind"]
    assert typing.get_args(field.annotation) == tuple(EXECUTORS)
    for kind, executor in EXECUTORS.items():
        assert ExecutorSpec(kind=kind).kind == kind and f"{kind}: {executor.summary}" in field.description
    with pytest.raises(ValidationError, match="should be 'local', 'debug' or 'slurm'"):
        ExecutorSpec(kind="pbs")


@pytest.mark.parametrize("kind", list(EXECUTORS))
def test_each_kind_makes_its_submitit_backend_and_knows_no_job_it_did_not_launch(kind, tmp_path):
    executor = EXECUTORS[kind]
    study = Study(StudySpec(name="s", executor={"kind": kind, "partition": "gpu"}), tmp_path / "s.yaml")
    made = executor.make(study)
    assert made.cluster == kind and made.folder == tmp_path / "s" / "submitit" / "%j"
    assert ("slurm_partition" in executor.parameters(study.spec.executor)) == (kind == "slurm")
    assert executor.liveness("999999999") == "ended"


def test_a_slurm_study_sets_how_often_a_job_is_requeued_at_its_limit(tmp_path):
    study = Study(StudySpec(name="s", executor={"kind": "slurm", "max_timeouts": 7}), tmp_path / "s.yaml")
    assert EXECUTORS["slurm"].make(study)._executor.max_num_timeout == 7  # submitit's count of timeouts



def test_every_run_state_is_described_where_status_help_points():
    import ablate.states

    described = re.findall(r"^    (\w+) {2,}", ablate.states.__doc__, flags=re.M)
    assert described == list(ablate.states.RUN_STATES)
