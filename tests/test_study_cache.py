"""What makes ``ablate plan`` and ``ablate status`` quick: the expanded study kept in its snapshot folder
(``ablate/study_cache.py``) and the training speed plan times once per model (``ablate/overview.py``), each
checked or timed again when what it depends on changes."""

from __future__ import annotations

import os

import pytest
from study_files import LOCAL, TINY, write_study

from ablate import overview, study_cache
from ablate.overview import plan_table
from ablate.schema import StudyError
from ablate.study_file import load_study


@pytest.fixture
def timings(monkeypatch, tmp_path) -> list[int]:
    """The model widths plan times (a stand-in for its few training steps), with a cache of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    timed: list[int] = []

    def time_steps(run):
        timed.append(run.config["model"]["dim"])
        return 1000.0 * len(timed)

    monkeypatch.setattr(overview, "_time_steps", time_steps)
    return timed


def _speed_line(plan: str) -> str:
    return next(line for line in plan.splitlines() if line.startswith("tokens/s"))


def test_plan_times_a_model_once_and_again_when_its_shape_threads_or_the_code_change(
        data_root, tmp_path, monkeypatch, timings):
    path = write_study(tmp_path, data_root, seeds=[0, 1])
    first = plan_table(load_study(path))
    assert timings == [load_study(path).runs[0].config["model"]["dim"]]
    assert _speed_line(first).endswith(": 5 steps timed here, one run alone")
    second = plan_table(load_study(path))
    assert len(timings) == 1  # kept: not timed again
    assert _speed_line(second).startswith("tokens/s 1,000 ") and "(kept in " in _speed_line(second)
    assert first.replace(_speed_line(first), "") == second.replace(_speed_line(second), "")  # the same table

    root = str(data_root[0])
    wider = write_study(tmp_path, data_root, name="wider", base={**TINY, "data.root": root, "model.dim": 96})
    assert "tokens/s 2,000 for model dim 96," in plan_table(load_study(wider))  # another shape: timed
    threads = write_study(tmp_path, data_root, name="threads", executor={**LOCAL, "threads_per_run": 2})
    assert "tokens/s 3,000 " in plan_table(load_study(threads))  # the same shape on two threads: timed
    assert len(timings) == 3

    monkeypatch.setattr(study_cache, "code_digest", lambda: b"other code")
    assert "tokens/s 4,000 " in plan_table(load_study(path))  # the code changed: timed again
    assert "tokens/s 4,000 " in plan_table(load_study(path)) and len(timings) == 4


def test_the_expanded_study_is_reused_until_its_file_the_code_or_its_data_change(data_root, tmp_path, monkeypatch):
    expansions = []
    original = study_cache.load_study

    def counted(path, expand=True, **options):
        expansions.append(expand)
        return original(path, expand, **options)

    monkeypatch.setattr(study_cache, "load_study", counted)
    path = write_study(tmp_path, data_root, seeds=[0, 1], grid={"masking": ["random", "block"]})
    assert study_cache.cached(path) is None  # nothing kept yet
    first = study_cache.load(path)
    assert expansions.count(True) == 1 and (study_cache.folder(first) / "study.pkl").is_file()
    again = study_cache.load(path)
    assert expansions.count(True) == 1
    assert [(r.key, r.config) for r in again.runs] == [(r.key, r.config) for r in first.runs]
    assert [r.key for r in study_cache.cached(path).runs] == [r.key for r in first.runs]

    with monkeypatch.context() as changed:
        changed.setattr(study_cache, "code_digest", lambda: b"other code")
        assert study_cache.cached(path) is None
        study_cache.load(path)
        assert expansions.count(True) == 2
    study_cache.load(path)  # the code as it was: its study is checked again
    assert expansions.count(True) == 3

    spec = data_root[0] / "spec.json"
    stat = spec.stat()
    try:
        os.utime(spec, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the data set rewritten
        assert study_cache.cached(path) is None
        study_cache.load(path)
        assert expansions.count(True) == 4
    finally:
        os.utime(spec, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    path.write_text(path.read_text().replace("block", "dirichlet"))
    assert study_cache.cached(path) is None
    assert {r.family for r in study_cache.load(path).runs} == {"random", "dirichlet"}


def test_a_refused_study_is_never_kept(data_root, tmp_path):
    path = write_study(tmp_path, data_root, grid={"masking": ["random", "nope"]})
    with pytest.raises(StudyError, match="grid.masking: 'nope': unknown masking strategy"):
        study_cache.load(path)
    assert not (tmp_path / "s" / "snapshot" / "study.pkl").exists()

    base = {**TINY, "data.root": str(data_root[0]), "model.dimm": 32}
    both = write_study(tmp_path, data_root, name="both", base=base, executor={**LOCAL, "max_parallel": 0})
    with pytest.raises(StudyError) as refused:  # the schema's problem and the configuration's, as load_study says
        study_cache.load(both)
    assert "executor.max_parallel: 0" in str(refused.value)
    assert "base.model.dimm: unknown config key" in str(refused.value)
