"""The expanded study, kept in ``studies/<name>/snapshot/study.pkl`` so that ``plan``, ``status`` and ``report``
need not compose every configuration and build every masking strategy again (about 0.05-0.2 s a configuration,
and torch for the strategies).

It is reused while the study file (its bytes and path), the code (``code_digest``) and every file of the data
sets the study names (size and modification time) are unchanged; anything else checks the study again. Only a
study that passed both rounds of validation is kept, so a reused one is as checked as a fresh one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pickle
from pathlib import Path

from ablate.schema import StudyError
from ablate.study import Study
from ablate.study_file import load_study
from ablate.validate import data_roots

CODE = [Path(__file__).resolve().parents[1] / pkg for pkg in ("ablate", "model")]


def folder(study: Study) -> Path:
    """The study's snapshot folder: this cache and what a report reads (``ablate/snapshot.py``)."""
    return study.dir / "snapshot"


def load(path: str | Path) -> Study:
    """``load_study``, reused from ``study.pkl`` while the study file, the code and its data sets are unchanged."""
    path = Path(path)
    try:
        kept = _cached(path, load_study(path, expand=False))  # the file and its schema checked: a valid name
    except StudyError:  # refused: the whole check below names every problem, not the schema's alone
        kept = None
    if kept is not None:
        return kept
    study = load_study(path)
    atomic(_file(study), lambda tmp: tmp.write_bytes(pickle.dumps((_key(path, study), study))))
    return study


def cached(path: str | Path) -> Study | None:
    """The kept study if it is current, else None (nothing validated or composed)."""
    path = Path(path)
    return _cached(path, load_study(path, expand=False))


def _cached(path: Path, unexpanded: Study) -> Study | None:
    try:
        key, study = pickle.loads(_file(unexpanded).read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
        return None  # none yet, or written by code that no longer has its classes
    return dataclasses.replace(study, path=path) if key == _key(path, unexpanded) else None


def _file(study: Study) -> Path:
    return folder(study) / "study.pkl"


def _key(path: Path, study: Study) -> str:
    stamps = sorted((root, _stamp(Path(root))) for root in data_roots(study.spec))
    return hashlib.sha256(path.read_bytes() + str(path.resolve()).encode() + code_digest()
                          + repr(stamps).encode()).hexdigest()


def _stamp(root: Path) -> list[tuple[str, int, int]]:
    """Every file under a data set's folder: path, size, modification time (empty if there is none)."""
    return sorted((str(f), (s := f.stat()).st_size, s.st_mtime_ns) for f in root.rglob("*") if f.is_file())


@functools.cache
def code_digest() -> bytes:
    """Of the sources a study's expansion, its runs' speed and a report's figures depend on (configs, masking, model,
    the study schema, the report)."""
    digest = hashlib.sha256()
    for root in CODE:
        for file in sorted(f for f in root.rglob("*") if f.suffix in (".py", ".yaml")):
            digest.update(file.read_bytes())
    return digest.digest()


def atomic(path: Path, write) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)
