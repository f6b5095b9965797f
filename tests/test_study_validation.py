"""A catalogue of malformed studies: each is refused before anything runs, with a message naming the file,
the key, the bad value and what is allowed, and nothing is launched nor changed in the study's MLflow store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from study_files import LOCAL, TINY

from ablate.cli import main

STRATEGIES = "aligned, block, dense, dirichlet, hard, random, sparse"
SEARCH = {"params": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}, "trials": 4,
          "metric": "train/loss"}


def sections(**changes) -> dict:
    """A valid study of the finished study's name (so a launch would land in its folder), with changes;
    a change to None removes the section."""
    study = {"name": "finished", "base": dict(TINY), "seeds": [0], "evaluate": False, "executor": LOCAL,
             "report": {"metrics": ["train/loss"]}}
    study.update(changes)
    return {k: v for k, v in study.items() if v is not None}


def base(**extra) -> dict:
    return {**TINY, **extra}


def search(**changes) -> dict:
    return {**SEARCH, **changes}


def lr(**param) -> dict:
    return search(params={"train.lr": param})


CATALOGUE = [  # (id, the study: sections or raw YAML text, what the message must say)
    # wrong keys
    ("unknown top-level key", sections(seed=[0]),
     ["seed: unknown key; allowed keys here: name, description, base, seeds, grid, variants, search"]),
    ("unknown executor key", sections(executor={**LOCAL, "gpus": 1}),
     ["executor.gpus: unknown key; allowed keys here: kind, max_parallel, threads_per_run"]),
    ("unknown config key", sections(grid={"train.stepz": [1, 2]}),
     ["grid.train.stepz: unknown config key 'train.stepz'; allowed keys under 'train': ['batch_size'"]),
    ("missing name", sections(name=None), ["name: required key is missing"]),
    ("bookkeeping key", sections(base=base(**{"train.seed": 3})),
     ["base.train.seed: set by the study (list seeds under 'seeds')"]),
    # wrong types
    ("string for an integer", sections(executor={**LOCAL, "threads_per_run": "one"}),
     ["executor.threads_per_run: 'one': should be a valid integer"]),
    ("boolean for an integer", sections(executor={**LOCAL, "max_parallel": True}),
     ["executor.max_parallel: True: should be a valid integer"]),
    ("scalar for a grid axis", sections(grid={"masking": "random"}),
     ["grid.masking: 'random': should be a valid list"]),
    ("bad config value type", sections(base=base(**{"train.steps": "ten"})),
     ["base.train.steps: bad value for config key 'train.steps': Value 'ten' of type 'str' could not be converted "
      "to Integer"]),
    ("string for evaluate", sections(evaluate="yes"), ["evaluate: 'yes': should be a valid boolean"]),
    # out of range
    ("zero runs at once", sections(executor={**LOCAL, "max_parallel": 0}),
     ["executor.max_parallel: 0: should be greater than or equal to 1"]),
    ("negative learning rate", sections(grid={"train.lr": [1e-3, -1.0]}),
     ["grid.train.lr: train.lr=-1.0, train.min_lr=0.0001: need 0 <= min_lr <= lr, lr > 0"]),
    ("budget larger than the tokens", sections(grid={"masking.input_budget": [64, 5000]}),
     ["grid.masking.input_budget: masking.input_budget=5000: must be an integer from 1 to 238, the number of "
      "tokens per sample in"]),
    # masking
    ("unknown strategy", sections(grid={"masking": ["random", "blockx"]}),
     [f"grid.masking: 'blockx': unknown masking strategy; allowed: {STRATEGIES}"]),
    ("unknown strategy by name", sections(variants={"v": {"masking.name": "mae"}}),
     ["variants.v.masking.name: 'mae': unknown masking strategy; allowed: aligned, block, dirichlet, hard, random"]),
    ("unknown masking parameter", sections(base=base(**{"masking.spread": 2})),
     ["base.masking.spread: masking.spread: unknown parameter of the 'dirichlet' masking; allowed: mask_ratio, "
      "input_alphas, target_alphas"]),
    ("parameter of another strategy", sections(base=base(masking="random", **{"masking.input_alphas.rgb": 0.5})),
     ["base.masking.input_alphas.rgb: masking.input_alphas: unknown parameter of the 'random' masking; allowed: "
      "mask_ratio"]),
    ("negative alpha", sections(grid={"masking.input_alphas.rgb": [0.5, -1]}),
     ["grid.masking.input_alphas.rgb: masking.input_alphas.rgb=-1: must be >= 0 and finite"]),
    ("alpha of an unknown modality", sections(base=base(**{"masking.input_alphas.lidar": 1.0})),
     ["base.masking.input_alphas.lidar: masking.input_alphas.lidar: unknown modality; modalities: boxes, caption, "
      "depth, rgb, semseg"]),
    # seeds
    ("negative seed", sections(seeds=[0, -1]), ["seeds.1: -1: should be greater than or equal to 0"]),
    ("seed beyond numpy's range", sections(seeds=[2**32]), ["seeds.0: 4294967296: should be less than 4294967296"]),
    ("repeated seed", sections(seeds=[1, 1]), ["seeds: [1, 1]: seeds must be distinct"]),
    ("no seeds", sections(seeds=[]), ["seeds: []: List should have at least 1 item"]),
    ("seeds as a string", sections(seeds="0,1"), ["seeds: '0,1': should be a valid list"]),
    # executor
    ("unknown executor", sections(executor={**LOCAL, "kind": "pbs"}),
     ["executor.kind: 'pbs': should be 'local', 'debug' or 'slurm'"]),
    ("zero memory", sections(executor={"kind": "slurm", "mem_gb": 0}),
     ["executor.mem_gb: 0: should be greater than 0"]),
    ("nested sbatch option", sections(executor={"kind": "slurm", "additional": {"qos": {"level": 1}}}),
     ["executor.additional: qos: {'level': 1}: an sbatch option takes a string, a number or a boolean"]),
    ("setup as a string", sections(executor={"kind": "slurm", "setup": "module load cuda"}),
     ["executor.setup: 'module load cuda': should be a valid list"]),
    ("negative timeout", sections(executor={**LOCAL, "timeout_min": -5}),
     ["executor.timeout_min: -5: should be greater than or equal to 1"]),
    # search space
    ("low above high", sections(search=lr(type="float", low=0.1, high=0.001)),
     ["search.params.train.lr: low=0.1 must be below high=0.001"]),
    ("log scale from zero", sections(search=lr(type="float", low=0.0, high=0.1, log=True)),
     ["search.params.train.lr: log=true needs low > 0 and no step"]),
    ("unknown parameter type", sections(search=lr(type="loguniform", low=1e-4, high=1e-2)),
     ["search.params.train.lr.type: 'loguniform': should be 'float', 'int' or 'categorical'"]),
    ("categorical without choices", sections(search=lr(type="categorical")),
     ["search.params.train.lr: a categorical parameter needs a non-empty 'choices' list and no low/high"]),
    ("fractional int step", sections(search=search(params={"train.steps": {"type": "int", "low": 2, "high": 8,
                                                                            "step": 0.5}})),
     ["search.params.train.steps: an int parameter needs integer low, high and step"]),
    ("unknown searched key", sections(search=search(params={"train.lrr": SEARCH["params"]["train.lr"]})),
     ["search.params.train.lrr: unknown config key 'train.lrr'"]),
    ("unknown strategy among choices", sections(search=search(params={"masking": {
        "type": "categorical", "choices": ["random", "bock"]}})),
     [f"search.params.masking: 'bock': unknown masking strategy; allowed: {STRATEGIES}"]),
    ("search and grid", sections(search=SEARCH, grid={"train.lr": [1e-3]}),
     ["search: a study is either a grid (grid/variants) or a search, not both"]),
    ("search over seeds", sections(search=SEARCH, seeds=[0, 1]),
     ["seeds: [0, 1]: a search runs each trial with one seed"]),
    ("no trials", sections(search=search(trials=0)), ["search.trials: 0: should be greater than or equal to 1"]),
    # objective
    ("objective nobody logs", sections(search=search(metric="eval/loss/meen"), evaluate=True),
     ["search.metric: 'eval/loss/meen': no run logs it; allowed: eval/acc/boxes", "eval/rgb_to_semseg/miou",
      "train/loss"]),
    ("objective needs evaluation", sections(search=search(metric="eval/loss/mean")),
     ["search.metric: 'eval/loss/mean' needs evaluate: true"]),
    ("unknown direction", sections(search=search(direction="down")),
     ["search.direction: 'down': should be 'minimize' or 'maximize'"]),
    ("unknown pruner", sections(search=search(pruner="hyperband")),
     ["search.pruner: 'hyperband': should be 'none' or 'median'"]),
    ("pruner on a final metric", sections(search=search(pruner="median", intermediate="eval/loss/mean"),
                                          evaluate=True),
     ["search.intermediate: 'eval/loss/mean': not logged during training, so the pruner cannot compare trials by "
      "it; allowed: train/loss"]),
    ("maximizing a loss-pruned search", sections(search=search(pruner="median", direction="maximize",
                                                               metric="train/lr")),
     ["search: pruner='median' compares 'intermediate' in the study's direction (maximize)"]),
    # report
    ("report column nobody logs", sections(report={"metrics": ["train/loss/rgbx"]}),
     ["report.metrics.0: 'train/loss/rgbx': no run logs it; allowed: "]),
    ("baseline matching nothing", sections(grid={"masking": ["random"]}, report={"baseline": {"masking": "block"}}),
     ["report.baseline: {'masking': 'block'} matches no configuration; configurations: ['masking=random']"]),
    ("variant and grid on one key", sections(grid={"masking": ["random"]}, variants={"v": {"masking": "block"}}),
     ["variants.v: sets ['masking'], which are also grid axes; set each key in one place"]),
    ("name leaving the folder", sections(name="../escape"),
     ["name: '../escape': String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]*$'"]),
    # YAML itself
    ("python object tag", "name: finished\ndescription: !!python/object/apply:os.system ['touch {tmp}/pwned']\n",
     ["line 2, column 14: could not determine a constructor for the tag "
      "'tag:yaml.org,2002:python/object/apply:os.system': a study is plain YAML"]),
    ("python name tag", "name: !!python/name:os.system finished\n",
     ["could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'"]),
    ("key given twice", "name: finished\nseeds: [0]\nseeds: [1]\n",
     ["line 3, column 1: not valid YAML: key 'seeds' given twice (first on line 2); give each key once"]),
    ("broken YAML", "name: finished\ngrid: {masking: [random\n", ["not valid YAML: expected ',' or ']'"]),
    ("not a mapping", "- name: finished\n",
     ["a study file is a mapping with keys ['base', 'description', 'evaluate', 'executor'"]),
]


def _store(db: Path) -> dict[str, list[tuple]]:
    """Every row of the MLflow tables that hold runs, in a stable order."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return {table: sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)  # noqa: S608
                for table in ("experiments", "runs", "params", "metrics", "latest_metrics", "tags")}


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def recorded(finished_study):
    """The finished study's store and folder as they are before any malformed study is submitted."""
    folder = finished_study.parent / "finished"
    return folder, _store(folder / "mlflow.db"), _files(folder)


def test_the_catalogue_is_large():
    assert len(CATALOGUE) >= 20


@pytest.mark.parametrize("study, expected", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_a_malformed_study_is_refused_and_changes_nothing(recorded, data_root, tmp_path, capsys, study, expected):
    folder, store, files = recorded
    path = folder.parent / "malformed.yaml"  # beside the finished study: a launch would write into its folder
    if isinstance(study, str):
        path.write_text(study.replace("{tmp}", str(tmp_path)))
    else:
        study = {**study, "base": {**study["base"], "data.root": str(data_root[0])}}
        path.write_text(yaml.safe_dump(study, sort_keys=False))

    assert main(["submit", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ablate: error: {path}"), err
    for part in expected:
        assert part in err, err
    for line in err.splitlines()[1:]:  # one problem per line, each naming the file
        assert line.startswith(f"  {path}: "), err
    assert not (tmp_path / "pwned").exists()
    assert _files(folder) == files  # nothing launched: no job folder, no run folder, no new file
    assert _store(folder / "mlflow.db") == store  # no run, param, metric or tag added or changed
