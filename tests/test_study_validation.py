"""A catalogue of malformed studies: each is refused before anything runs, with a message naming the file,
the key, the bad value and what is allowed, and nothing is launched nor changed in the study's MLflow store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from study_files import LOCAL, TINY

from ablate.cli import main
from ablate.executors import EXECUTORS
from model.config import group_options

# The masking choices a study may name: the presets (each family has one of its own name).
STRATEGIES = ", ".join(group_options()["masking"])
# The executor kinds, as the refusal of another lists them.
*_OTHERS, _LAST = map(repr, EXECUTORS)
KINDS = f"{', '.join(_OTHERS)} or {_LAST}"
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


def race(**changes) -> dict:
    """A valid race of two learning rates, with changes (the race's own keys)."""
    return {"grid": {"train.lr": [1e-3, 2e-3]}, "seeds": None, "race": {"metric": "train/loss", **changes}}


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
     [f"executor.kind: 'pbs': should be {KINDS}"]),
    ("zero memory", sections(executor={"kind": "slurm", "mem_gb": 0}),
     ["executor.mem_gb: 0: should be greater than 0"]),
    ("nested sbatch option", sections(executor={"kind": "slurm", "additional": {"qos": {"level": 1}}}),
     ["executor.additional: qos: {'level': 1}: an sbatch option takes a string, a number or a boolean"]),
    ("setup as a string", sections(executor={"kind": "slurm", "setup": "module load cuda"}),
     ["executor.setup: 'module load cuda': should be a valid list"]),
    ("negative timeout", sections(executor={**LOCAL, "timeout_min": -5}),
     ["executor.timeout_min: -5: should be greater than or equal to 1"]),
    ("signal delay near the limit", sections(executor={"kind": "slurm", "timeout_min": 1}),
     ["executor: timeout_min=1 (60 s) with signal_delay_s=120 leaves a job sure of 0 s of training before each "
      "requeue (SLURM may send the warning up to 60 s earlier than asked); allowed: timeout_min >= 4 (a job sure "
      "of at least 60 s, a delay of at most 50% of the limit)"]),
    ("a minute's limit and SLURM's early warning", sections(executor={"kind": "slurm", "timeout_min": 1,
                                                                      "signal_delay_s": 30}),
     ["executor: timeout_min=1 (60 s) with signal_delay_s=30 leaves a job sure of 0 s of training before each "
      "requeue (SLURM may send the warning up to 60 s earlier than asked); allowed: timeout_min >= 3 (a job sure "
      "of at least 60 s, a delay of at most 50% of the limit)"]),
    ("a delay that leaves no time after the early warning", sections(executor={"kind": "slurm", "timeout_min": 2,
                                                                               "signal_delay_s": 60}),
     ["executor: timeout_min=2 (120 s) with signal_delay_s=60 leaves a job sure of 0 s of training before each "
      "requeue (SLURM may send the warning up to 60 s earlier than asked); allowed: signal_delay_s <= 0 or "
      "timeout_min >= 3 (a job sure of at least 60 s, a delay of at most 50% of the limit)"]),
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
    # race
    ("race seeds out of order", sections(**race(min_seeds=5, max_seeds=3)),
     ["race: min_seeds=5 is above max_seeds=3"]),
    ("race of one seed", sections(**race(min_seeds=1)),
     ["race.min_seeds: 1: should be greater than or equal to 2"]),
    ("race alpha too large", sections(**race(alpha=0.7)), ["race.alpha: 0.7: should be less than 0.5"]),
    ("race without a metric", sections(**{**race(), "race": {"min_seeds": 3}}), ["race.metric: required key"]),
    ("race metric without direction", sections(**race(metric="train/grad_norm")),
     ["race.metric: ['train/grad_norm']: no known direction (lower or higher is better)"]),
    ("race metric nobody logs", sections(**race(metric="eval/loss/meen"), evaluate=True),
     ["race.metric: 'eval/loss/meen': no run logs it; allowed: eval/acc/boxes"]),
    ("race metric needs evaluation", sections(**race(metric="eval/loss/mean")),
     ["race.metric: 'eval/loss/mean' needs evaluate: true"]),
    ("race unknown test", sections(**race(test="friedman")),
     ["race.test: 'friedman': should be 'paired' or 'pooled'"]),
    ("race unknown spending", sections(**race(spending="bonferroni")),
     ["race.spending: 'bonferroni': should be 'pocock' or 'obrien_fleming'"]),
    ("race negative margin", sections(**race(margin=-0.1)), ["race.margin: -0.1: should be greater than or equal"]),
    ("race unknown key", sections(**race(max_seed=4)), ["race.max_seed: unknown key; allowed keys here: metric"]),
    ("race seeds not matching", sections(**{**race(max_seeds=4), "seeds": [0, 1, 2]}),
     ["seeds: [0, 1, 2]: a race takes its seeds from this list in order; list race.max_seeds=4 seeds"]),
    ("race of a search", sections(search=SEARCH, race={"metric": "train/loss"}),
     ["race: races a grid's configurations over seeds; a search runs each trial once"]),
    ("race of one configuration", sections(race={"metric": "train/loss"}, seeds=None),
     ["race: the study has one configuration"]),
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
    # found by new users (issue 13)
    ("a name too long for a folder", sections(name="n" * 300),
     ["name: 'nnnnnnnnnn", "...", "': String should have at most 100 characters"]),
    ("a number for a group choice", sections(grid={"masking": ["random", 3]}),
     [f"grid.masking: 3: a masking strategy is a name, one of {STRATEGIES}"]),
    ("a mapping for a group choice", sections(base=base(model={"dim": 32})),
     ["base.model: {'dim': 32}: a model choice is a name, one of base, nano, tiny; a key under it is "
      "model.<key>: value"]),
    ("a byte that is not UTF-8", b"name: finished\ndescription: caf\xe9\n",
     ["line 2: byte 0xe9 is not UTF-8 text; a study file is UTF-8"]),
    ("an infinite learning rate", sections(base=base(**{"train.lr": float("inf")})),
     ["base.train.lr: train.lr=inf: must be a finite number"]),
    ("negative evaluation samples", sections(base=base(**{"eval.num_samples": -5})),
     ["base.eval.num_samples: eval.num_samples=-5: must be at least 1"]),
    ("two variants alike", sections(variants={"a": {"train.lr": 0.001}, "b": {"train.lr": 0.001}}),
     ["configuration variant=b: the same configuration as variant=a (equal resolved configs: the same runs)"]),
    ("a grid value twice", "name: finished\nbase: {model: tiny}\ngrid: {train.lr: [0.001, 1.0e-3]}\n",
     ["grid.train.lr: 0.001 is given twice; give each value once"]),
    ("a misspelled model key", sections(base=base(**{"model.dimm": 32})),
     ["base.model.dimm: unknown config key 'model.dimm'; allowed keys under 'model': ['codebook_input', "
      "'codebook_output', 'dec_depth', 'dim', 'dropout', 'enc_depth', 'grid_bias', 'heads', 'loss_weighting', "
      "'mlp_ratio']"]),
    ("a metric name MLflow rewrites", sections(report={"metrics": ["eval/rgb->semseg/miou"]}, evaluate=True),
     ["report.metrics: 'eval/rgb->semseg/miou': MLflow would store this metric under another name; write "
      "'eval/rgb_to_semseg/miou'"]),
    ("a grid too large", sections(grid={f"train.{k}": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] for k in (
        "steps", "batch_size", "grad_accum", "log_every", "checkpoint_every", "warmup_steps", "weight_decay")}),
     ["grid: 10,000,000 configurations (10 train.steps x 10 train.batch_size x 10 train.grad_accum x 10 "
      "train.log_every x 10 train.checkpoint_every x 10 train.warmup_steps x 10 train.weight_decay), more than "
      "max_configurations=10,000"]),
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
    if isinstance(study, bytes):
        path.write_bytes(study)
    elif isinstance(study, str):
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


def _laughs(levels: int = 9) -> str:
    """A YAML flow list whose last item is 10**levels strings once its aliases are written out."""
    items = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    items += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


BOUNDED = [  # (id, study text): each would take minutes and gigabytes to expand or to print
    ("an alias bomb as the description", f"name: bomb\ndescription: {_laughs()}\n"),
    ("an alias bomb in a grid axis", f"name: bomb\nbase: {{model: tiny}}\ngrid: {{train.lr: {_laughs()}}}\n"),
    ("ten million configurations", "name: huge\nbase: {model: tiny}\ngrid:\n" + "".join(
        f"  train.{k}: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" for k in (
            "steps", "batch_size", "grad_accum", "log_every", "checkpoint_every", "warmup_steps", "weight_decay"))),
]


@pytest.mark.parametrize("text", [b[1] for b in BOUNDED], ids=[b[0] for b in BOUNDED])
def test_a_study_too_large_to_expand_is_refused_in_bounded_time_and_memory(tmp_path, text):
    import resource
    import subprocess
    import sys

    def limit_memory() -> None:  # the address space of the child: 2 GiB
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    path = tmp_path / "big.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "ablate.cli", "plan", str(path)], capture_output=True, text=True,
                          timeout=60, preexec_fn=limit_memory, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"ablate: error: {path}"), done.stderr[-2000:]
    assert len(done.stderr) < 3000  # the value is never printed whole
    assert "values once its YAML aliases" in done.stderr or "more than max_configurations=10,000" in done.stderr


def test_max_configurations_lets_a_larger_grid_expand(data_root, tmp_path, capsys):
    grid = {"train.lr": [0.001, 0.002, 0.003], "train.steps": [4, 5]}
    study = {**sections(grid=grid, max_configurations=5), "base": {**TINY, "data.root": str(data_root[0])}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(study))
    from ablate.schema import StudyError
    from ablate.study_file import load_study

    with pytest.raises(StudyError, match=r"grid: 6 configurations \(3 train.lr x 2 train.steps\), more than "
                                         r"max_configurations=5; shrink the grid, or raise max_configurations"):
        load_study(path)
    path.write_text(yaml.safe_dump({**study, "max_configurations": 6}))
    assert len(load_study(path).runs) == 6


def _broken_copies(data_root, tmp_path) -> dict[str, Path]:
    """Copies of the test data set, each broken in one array: problem -> folder."""
    import shutil

    import numpy as np

    from model.dataset import array_path

    def copy(name: str, split: str, modality: str, change) -> Path:
        root = tmp_path / name
        shutil.copytree(data_root[0], root)
        path = array_path(root, split, modality)
        np.save(path, change(np.load(path)))
        return root

    def out_of_vocabulary(a):
        a = a.copy()
        a[0, 0] = 10**6
        return a

    return {"token id 1000000 outside the vocabulary": copy("vocab", "train", "caption", out_of_vocabulary),
            "shape (3000, 8, 4), expected (3000, 8, 8)": copy("shape", "train", "rgb", lambda a: a[:, :, :4]),
            "unequal sample counts per modality": copy("counts", "train", "boxes", lambda a: a[:-1]),
            "val/depth.npy: shape": copy("val", "val", "depth", lambda a: a[:, :4])}


def test_plan_refuses_a_grid_over_broken_data_folders_and_train_refuses_one_before_it_starts(data_root, tmp_path,
                                                                                             capsys):
    broken = _broken_copies(data_root, tmp_path)
    study = {**sections(grid={"data.root": [str(data_root[0]), *map(str, broken.values())]}), "base": dict(TINY)}
    path = tmp_path / "roots.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    for problem, root in broken.items():
        assert f"grid.data.root: {root}" in err and problem in err, err
    assert f"  {path}: " in err and len(err.splitlines()) == 1 + len(broken)

    out, store = tmp_path / "run", tmp_path / "mlflow.db"
    assert main(["train", f"data.root={broken['val/depth.npy: shape']}", "model=tiny", f"train.out_dir={out}",
                 f"tracking.uri=sqlite:///{store}"]) == 2
    assert "val/depth.npy: shape" in capsys.readouterr().err
    assert not out.exists() and not store.exists()  # no run folder, no MLflow run


def test_slurm_without_a_partition_takes_the_clusters_default_and_plan_says_so(data_root, tmp_path):
    from ablate.overview import plan_table
    from ablate.study_file import load_study

    study = {**sections(executor={"kind": "slurm"}), "base": {**TINY, "data.root": str(data_root[0])}}
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(study))
    assert "SLURM partition: the cluster's default (executor.partition is not set)" in plan_table(load_study(path))
    path.write_text(yaml.safe_dump({**study, "executor": {"kind": "slurm", "partition": "gpu"}}))
    assert "SLURM partition 'gpu'" in plan_table(load_study(path))


def test_plan_estimates_a_slurm_study_with_its_array_parallelism(data_root, tmp_path):
    """A SLURM study's runs go out as one array: array_parallelism of them train at once, not max_parallel."""
    import re

    from ablate.overview import plan_table
    from ablate.study_file import load_study

    study = {**sections(grid={"train.lr": [1e-3, 2e-3, 3e-3, 4e-3]}), "seeds": [0],
             "base": {**TINY, "data.root": str(data_root[0]), "train.steps": 100_000}}
    walls = {}
    for at_once in (1, 4):
        path = tmp_path / f"slurm{at_once}.yaml"
        path.write_text(yaml.safe_dump({**study, "executor": {"kind": "slurm", "max_parallel": 1,
                                                              "array_parallelism": at_once}}))
        plan = plan_table(load_study(path))
        assert f"wall with array_parallelism={at_once} (slurm executor)" in plan
        walls[at_once] = re.search(r"remaining: ≈(.+?) of training, ≈(.+?) wall", plan).groups()
    (total_1, wall_1), (total_4, wall_4) = walls[1], walls[4]  # each plan times the model itself
    assert wall_1 == total_1  # one at a time: the sum
    assert wall_4 != total_4 and float(wall_4.split()[0]) < float(total_4.split()[0])  # four equal runs at once


def test_help_and_a_refused_study_import_neither_torch_nor_mlflow(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nbase: {model: tiny, model.dimm: 32}\nexecutor: {max_parallel: 0}\n")
    probe = ("import sys, contextlib, io\nfrom ablate.cli import main\n"
             "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])\n"
             f"assert main(['plan', {str(path)!r}]) == 2\n"
             "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "base.model.dimm: unknown config key" in done.stderr and "executor.max_parallel: 0" in done.stderr
