"""Executor kinds: the schema allows exactly the registered ones and their keys, and each makes its own submitit
backend from plain values."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from ablate.executors import EXECUTORS
from ablate.executors.base import COMMON_KEYS
from ablate.schema import ExecutorSpec

ROOT = Path(__file__).parents[1]


def test_the_schema_allows_exactly_the_registered_kinds_and_names_them_when_refusing_another():
    field = ExecutorSpec.model_fields["kind"]
    assert typing.get_args(field.annotation) == tuple(EXECUTORS)
    for kind, executor in EXECUTORS.items():
        assert ExecutorSpec(kind=kind).kind == kind and f"{kind}: {executor.summary}" in field.description
    *others, last = [repr(kind) for kind in EXECUTORS]
    assert others[:2] == ["'local'", "'debug'"]  # the default first, then by name
    with pytest.raises(ValidationError, match=f"should be {', '.join(others)} or {last}"):
        ExecutorSpec(kind="pbs")


def test_the_executor_section_is_the_common_keys_and_every_kind_s_own():
    kind_keys = [key for executor in EXECUTORS.values() for key in executor.keys]
    assert list(ExecutorSpec.model_fields) == ["kind", *COMMON_KEYS, *kind_keys]
    for executor in EXECUTORS.values():
        for key, (_, field) in executor.keys.items():
            assert ExecutorSpec.model_fields[key].description == field.description
    assert ExecutorSpec(kind="local", partition="gpu").partition == "gpu"  # another kind's key: kept, ignored


# A scheduler's kind asks its real cluster: on the SLURM tests' worker, so that it never runs while one of them has
# stopped the controller (with two workers: -n 2 --dist loadgroup).
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.xdist_group("slurm")) if EXECUTORS[k].detached
                                  else k for k in EXECUTORS])
def test_each_kind_makes_its_submitit_backend_and_knows_no_job_it_did_not_launch(kind, tmp_path):
    executor = EXECUTORS[kind]
    settings = ExecutorSpec(kind=kind, partition="gpu").model_dump()
    made = executor.make(tmp_path / "submitit", "nano4m-s", settings)
    assert made.cluster == (executor.cluster or kind) and made.folder == tmp_path / "submitit" / "%j"
    assert ("slurm_partition" in executor.parameters(settings)) == (kind == "slurm")
    assert executor.liveness("999999999") == "ended"


def test_a_slurm_study_sets_how_often_a_job_is_requeued_at_its_limit(tmp_path):
    settings = ExecutorSpec(kind="slurm", max_timeouts=7).model_dump()
    assert EXECUTORS["slurm"].make(tmp_path, "s", settings)._executor.max_num_timeout == 7  # submitit's count


def test_kinds_are_handed_plain_values_and_import_nothing_else_of_the_project():
    """A kind never sees a Study (nor the schema): the executors package imports only itself."""
    out = subprocess.run([sys.executable, "scripts/imports.py", "--modules"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    edges = dict(line.split(" -> ") for line in out.stdout.splitlines() if line.startswith("ablate.executors"))
    assert {"ablate.executors", *(f"ablate.executors.{m}" for m in ("base", "debug", "local", "slurm"))} <= set(edges)
    outside = {dst for dsts in edges.values() for dst in dsts.split(", ")} - {"(nothing of the project)"}
    assert outside and all(dst.startswith("ablate.executors.") for dst in outside), outside


def test_every_run_state_is_described_where_status_help_points():
    import ablate.states

    described = re.findall(r"^    (\w+) {2,}", ablate.states.__doc__, flags=re.M)
    assert described == list(ablate.states.RUN_STATES)
