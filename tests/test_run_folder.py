"""The run folder has one owner: ``model/run_folder.py`` names its files, and reads and writes them."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model.run_folder import TAIL_BYTES, RunFolder

ROOT = Path(__file__).parents[1]
OWNER = ROOT / "model" / "run_folder.py"
# String literals in model/ and ablate/ that are a run-folder name by coincidence, and what they are.
NOT_RUN_FOLDER_NAMES = {
    ("ablate/figures.py", "masks"): "the report's figure of the realized masks (masks.pdf, masks.png)",
    ("ablate/cli.py", "generation.png"): "where `ablate generate` draws by default (in the working directory)",
}


def declared() -> dict[str, str]:
    """Each name ``RunFolder`` declares (its upper-case string attributes, split at ``/``) -> the attribute."""
    names: dict[str, str] = {}
    for key, value in vars(RunFolder).items():
        for part in value.split("/") if key.isupper() and isinstance(value, str) else ():
            names.setdefault(part, key)  # masks: MASKS, not the artifact path that begins with it
    return names


def literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of each string literal; an f-string as its text with ``{}`` where a value goes."""
    found, inside = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and id(node) not in inside:
            inside |= {id(n) for n in ast.walk(node)}  # its pieces and format specs
            found.append((node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside:
            found.append((node.lineno, node.value))
    return found


def named(part: str, names: dict[str, str]) -> str | None:
    """The attribute whose name ``part`` is (a ``*_PREFIX`` begins a name: ``step_{}``, ``step_*``), or None."""
    for name, key in names.items():
        if part == name or key.endswith("_PREFIX") and re.fullmatch(re.escape(name) + r"(\{\}|\*|\d+)", part):
            return key
    return None


def spelled(text: str, names: dict[str, str]) -> str | None:
    """The attribute whose name ``text`` spells as a path or a part of one, or None. A name must end the path
    or be followed by another name: ``masks/{}`` (a metric's name) only begins with a folder's."""
    parts = text.split("/")
    for i, part in enumerate(parts):
        if (key := named(part, names)) and (i == len(parts) - 1 or named(parts[i + 1], names)):
            return key
    return None


def test_no_file_of_model_or_ablate_but_the_run_folders_own_spells_a_run_folder_name():
    names = declared()
    assert {"config.yaml", "latest", "history.jsonl", "mlflow_run_id", "lease.json"} <= set(names)
    found = []
    for path in sorted([*(ROOT / "model").rglob("*.py"), *(ROOT / "ablate").rglob("*.py")]):
        if path == OWNER:
            continue
        where = path.relative_to(ROOT).as_posix()
        for line, text in literals(ast.parse(path.read_text(), str(path))):
            if (where, text) not in NOT_RUN_FOLDER_NAMES and (key := spelled(text, names)):
                found.append(f"{where}:{line}: {text!r} is RunFolder.{key}")
    assert not found, "name these through model/run_folder.py's RunFolder:\n" + "\n".join(found)


def test_the_check_finds_what_it_looks_for():
    names = declared()
    paths = ["checkpoints/latest", "masks/mask_frequency.png", "step_{}", "step_*", "eval.json", "x/config.yaml",
             "checkpoints", "lease.lock"]
    others = ["masks/{}", "masks/", "masks/{}/hidden_agreement", "checkpoints and requeues", "masks_figure",
              "see model/step_signals.py", "the config", "latest_metrics"]
    assert [text for text in paths + others if spelled(text, names)] == paths
    tree = ast.parse('x = f"step_{step:07d}"\ny = out / "history.jsonl"')
    assert literals(tree) == [(1, "step_{}"), (2, "history.jsonl")]


def test_the_exemptions_are_still_needed():
    """An exemption nobody needs any more goes (else it hides a name spelled where it once was harmless)."""
    for where, text in NOT_RUN_FOLDER_NAMES:
        assert text in {t for _, t in literals(ast.parse((ROOT / where).read_text()))}, (where, text)


def test_reading_the_latest_step_loads_no_torch():
    """``ablate status`` reads it for every run of a study, and must stay light."""
    probe = "import sys, model.run_folder; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_latest_checkpoint_of_a_folder_written_before_named_states(tmp_path):
    """An older trainer's folder: positional state files, a pointer with a newline, an older step left over."""
    folder = RunFolder(tmp_path)
    for step in (2, 3):
        (tmp_path / "checkpoints" / f"step_{step:07d}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"step_{step:07d}" / "custom_checkpoint_0.pkl").write_bytes(b"")
    (tmp_path / "checkpoints" / "latest").write_text("step_0000003\n")
    assert folder.latest_step() == 3
    assert folder.latest_checkpoint() == tmp_path / "checkpoints" / "step_0000003" == folder.checkpoint(3)
    assert folder.saved_checkpoints() == [folder.checkpoint(2), folder.checkpoint(3)]


def test_no_checkpoint_yet_and_a_pointer_to_a_missing_one(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.latest_step() is None and folder.latest_checkpoint() is None
    folder.checkpoint(5).mkdir(parents=True)
    folder.point_latest(folder.checkpoint(5))
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step_0000005"
    assert folder.latest_step() == 5 and folder.latest_checkpoint() == folder.checkpoint(5)
    assert sorted(p.name for p in folder.checkpoints.iterdir()) == ["latest", "step_0000005"]  # no temporary left
    folder.checkpoint(5).rmdir()
    assert folder.latest_checkpoint() is None and folder.latest_step() == 5  # the pointer alone says the step


def test_resuming_drops_the_history_logged_after_the_checkpoint_and_a_cut_off_record(tmp_path):
    folder = RunFolder(tmp_path)
    history = folder.open_history(0)
    for step in (1, 2, 3, 4):
        history.append(step, {"train/loss": 1.0 / step})
    history.close()
    with folder.history.open("a") as f:
        f.write('{"step": 5, "train/lo')  # killed mid-write
    history = folder.open_history(2)  # resumed from the checkpoint at step 2
    assert [json.loads(line)["step"] for line in folder.history.read_text().splitlines()] == [1, 2]
    history.append(3, {"train/loss": 0.3})
    assert folder.last_logged() == (3, {"train/loss": 0.3})  # flushed at once: a status reads it while it runs
    history.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "history.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_the_last_record_is_read_from_the_tail_past_a_half_written_line(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.last_logged() is None
    history = folder.open_history(0)
    long_run = 4 * TAIL_BYTES // len(json.dumps({"step": 1, "train/loss": 0.5}))
    for step in range(1, long_run + 1):
        history.append(step, {"train/loss": 0.5, "train/lr": 1e-3})
    history.close()
    assert folder.last_logged() == (long_run, {"train/loss": 0.5, "train/lr": 1e-3})
    with folder.history.open("a") as f:
        f.write('{"step": 99999, "train/loss": 0.')  # a write under way
    assert folder.last_logged()[0] == long_run
    folder.history.write_text('{"step": 1, "train/loss": 2.0}\n["not", "a", "record"]\n{"loss": 1.0}\n')
    assert folder.last_logged() == (1, {"train/loss": 2.0})


def test_the_mlflow_run_id_round_trip(tmp_path):
    folder = RunFolder(tmp_path / "runs" / "abc-s0")
    assert folder.read_mlflow_run_id() is None
    folder.write_mlflow_run_id("0123abcd")  # before the trainer made the folder: the submitter's ledger does
    assert folder.read_mlflow_run_id() == "0123abcd"
    assert (tmp_path / "runs" / "abc-s0" / "mlflow_run_id").read_text() == "0123abcd"
    (tmp_path / "runs" / "abc-s0" / "mlflow_run_id").write_text("0123abcd\n")  # by hand, with a newline
    assert folder.read_mlflow_run_id() == "0123abcd"


def test_the_config_and_the_evaluation_round_trip(tmp_path):
    from model.config import compose

    folder = RunFolder(tmp_path / "run")
    cfg = compose(["model=tiny", "train.steps=7"])
    folder.write_config(cfg)
    assert folder.read_config() == cfg
    folder.write_eval({"loss/mean": 1.5})
    assert folder.read_eval() == {"loss/mean": 1.5} == json.loads((tmp_path / "run" / "eval.json").read_text())


@pytest.mark.parametrize("attribute, relative", [
    ("config", "config.yaml"), ("history", "history.jsonl"), ("eval", "eval.json"), ("generation", "generation.png"),
    ("mask_budgets", "masks/mask_budgets.png"), ("mask_frequency", "masks/mask_frequency.png"),
    ("lease", "lease.json"), ("lease_lock", "lease.lock"), ("checkpoints", "checkpoints"),
])
def test_the_names_on_disk_are_those_older_folders_have(tmp_path, attribute, relative):
    """Renaming one would leave every run folder (and MLflow store) written before unreadable."""
    assert getattr(RunFolder(tmp_path), attribute) == tmp_path / relative


def test_reports_read_the_mask_figure_where_trainers_of_every_version_logged_it():
    assert RunFolder.MASK_FREQUENCY_ARTIFACT == "masks/mask_frequency.png"
