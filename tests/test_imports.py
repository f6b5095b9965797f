"""``model/`` is a library on its own: it imports nothing from ``ablate/``, and using it loads no MLflow; no
project modules import each other in a circle."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _imports_script():
    spec = importlib.util.spec_from_file_location("imports_script", ROOT / "scripts" / "imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_imports_nothing_from_ablate_and_no_module_is_in_an_import_circle():
    out = subprocess.run([sys.executable, "scripts/imports.py"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "model/ imports model/\n" in out.stdout and "model/ imports nothing from ablate/" in out.stdout
    assert out.stdout.endswith("no import circle\n")


def test_every_circle_is_found_and_named_with_the_lines_that_close_it():
    script = _imports_script()
    edges = {"a": {"b": 1}, "b": {"c": 2, "d": 3}, "c": {"a": 4}, "d": {"b": 5}, "e": {"e": 6}, "f": {"a": 7}}
    assert script.cycles(edges) == [["a", "b", "c", "a"], ["b", "d", "b"], ["e", "e"]]
    files = {name: script.ROOT / f"{name}.py" for name in edges}
    described = script.describe(edges, files, ["b", "d", "b"])
    assert described == "import circle b -> d -> b:\n  b.py:3 imports d\n  d.py:5 imports b"


def test_imports_inside_functions_and_for_type_checking_count(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ablate.study import Study\n\n"
                      "def f():\n    from model import config\n    import model.masking.base\n")
    known = {"ablate.study", "model", "model.config", "model.masking", "model.masking.base"}
    assert _imports_script().imports(source, known) == {"ablate.study": 3, "model.config": 6, "model.masking.base": 7}


def test_training_and_evaluating_load_neither_ablate_nor_mlflow():
    probe = ("import sys, model.train, model.evaluate, model.checkpoint, model.generate; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'ablate', 'mlflow', 'optuna', 'submitit'}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_task_table_loads_without_torch():
    """Studies check their metric names against it, and a refused study should not wait for torch."""
    probe = "import sys, model.tasks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
