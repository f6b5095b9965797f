"""``model/`` is a library on its own: it imports nothing from ``ablate/``, and using it loads no MLflow."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_model_imports_nothing_from_ablate():
    out = subprocess.run([sys.executable, "scripts/imports.py"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "model/ imports model/\n" in out.stdout and "model/ imports nothing from ablate/" in out.stdout


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
