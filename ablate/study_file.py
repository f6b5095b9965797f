"""Reading a study file: bounded (its size, UTF-8, its values with every YAML alias written out), plain YAML
that refuses a key given twice, the schema's errors described by key, value and what is allowed, and every
problem of a round (``ablate/validate.py``) in one ``StudyError`` naming the file.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ValidationError

from ablate.schema import StudyError, StudySpec
from ablate.study import Study
from ablate.validate import abbreviated, first_round, second_round

MAX_FILE_BYTES = 1_000_000
MAX_VALUES = 1_000_000  # values in the file with every YAML alias written out (an alias bomb has billions)
MAX_LINE = 4000  # characters of one problem line: a value is never printed whole if it is long


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` as a float (PyYAML's YAML 1.1 resolver wants ``1.0e-3``) and
    refuses a key given twice in one mapping (PyYAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in first:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} given twice (first on line {first[key] + 1}); give each key once",
                    problem_mark=key_node.start_mark)
            if isinstance(key, typing.Hashable):
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_study(path: str | Path, expand: bool = True, strategies: bool = True) -> Study:
    """Read, validate and expand a study file; all problems of a round (``ablate/validate.py``) in one ``StudyError``.

    ``expand=False`` reads the file and its schema only (no configuration composed, no data set read): enough
    for what needs only the study's name and folder, such as ``ablate ui`` and ``ablate cancel``.
    ``strategies=False`` expands it with the first round alone (no masking strategy built, no torch
    imported): enough for what reads its runs' keys and configs, such as ``ablate status``."""
    path = Path(path)
    where = str(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: a study file is a mapping with keys {sorted(StudySpec.model_fields)}")
    problems: list[str] = []
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        problems = [_describe(err) for err in e.errors()]
        # Check the rest too: the sections without errors, with defaults for the others.
        broken = {err["loc"][0] for err in e.errors()}
        try:
            spec = StudySpec.model_validate({k: v for k, v in raw.items() if k not in broken})
        except ValidationError:
            raise _error(where, problems) from None
    study = Study(spec, path)
    if expand:
        found, configs = first_round(study)
        problems += found
        if not problems and strategies:  # the second round
            problems += second_round(spec, configs)
    if problems:
        raise _error(where, problems)
    return study


def _read(path: Path) -> Any:
    """The file's YAML, bounded: at most ``MAX_FILE_BYTES``, UTF-8, at most ``MAX_VALUES`` values once every
    alias is written out."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise StudyError(f"{where}: {size:,} bytes; a study file is at most {MAX_FILE_BYTES:,} bytes")
        data = path.read_bytes()
    except OSError as e:
        raise StudyError(f"{where}: cannot read the study file ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise StudyError(f"{where}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8 text; a study file is "
                         "UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise StudyError(f"{where}: {_yaml_problem(e)}") from None
    except RecursionError:
        raise StudyError(f"{where}: nested too deeply to be a study") from None
    if _values(raw, MAX_VALUES) is None:
        raise StudyError(f"{where}: more than {MAX_VALUES:,} values once its YAML aliases (*name) are written out, "
                         "or an alias inside what it names; a study file repeats no large value")
    return raw


def _values(root: Any, limit: int) -> int | None:
    """How many values ``root`` holds with every alias written out (a list used twice counts twice); None if
    more than ``limit``, or if a value holds itself (``&a [*a]``). Counted once per distinct list or mapping."""
    sizes: dict[int, int] = {}  # id of a list or mapping -> its count
    active: set[int] = set()  # the lists and mappings being counted: met again inside themselves, a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (list, dict)) or (not children_done and id(node) in sizes):
            continue
        children = [*node, *node.values()] if isinstance(node, dict) else node
        if children_done:
            active.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
            if sizes[id(node)] > limit:
                return None
        elif id(node) in active:
            return None
        else:
            active.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children)
    return sizes.get(id(root), 1)


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(e, "problem", None) or str(e)
    if isinstance(e, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
        return (f"{at}{problem}: a study is plain YAML (mappings, lists, strings, numbers, booleans, null); "
                "tags that build Python objects are refused")
    return f"{at}not valid YAML: {problem}"


def _error(where: str, problems: list[str]) -> StudyError:
    unique = list(dict.fromkeys(problems))
    lines = "\n".join(f"  {where}: {_cut(p)}" for p in unique)
    return StudyError(f"{where} is not a valid study ({len(unique)} problem{'s' * (len(unique) > 1)}):\n{lines}")


def _describe(err: dict) -> str:
    """One pydantic error as 'key.path: value: what is wrong; what is allowed'."""
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key; allowed keys here: {', '.join(_fields_at(err['loc'][:-1]))}"
    if err["type"] == "value_error":
        return f"{loc}: {err['msg'].removeprefix('Value error, ')}"
    if err["type"] == "missing":
        return f"{loc}: required key is missing"
    return f"{loc}: {abbreviated(err['input'])}: {err['msg'].replace('Input should', 'should')}"


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else f"{line[:MAX_LINE]}... ({len(line):,} characters in all)"


def _fields_at(loc: tuple) -> list[str]:
    """The keys allowed by the schema at a location (walking models, dicts, lists and optionals)."""
    node: Any = StudySpec
    for part in loc:
        node = node.model_fields[part].annotation if _is_model(node) else typing.get_args(node)[-1]
        node = _unwrap(node)
    return list(node.model_fields)


def _unwrap(node: Any) -> Any:
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(node) if _is_model(a)), node)
    if typing.get_origin(node) is Annotated:
        return typing.get_args(node)[0]
    return node


def _is_model(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)


def find_study_file(name: str) -> Path:
    """A path, or the name of a study in ``studies/``."""
    path = Path(name)
    if path.exists():
        return path
    if not path.suffix and (Path("studies") / f"{name}.yaml").is_file():
        return Path("studies") / f"{name}.yaml"
    known = sorted(p.stem for p in Path("studies").glob("*.yaml"))
    raise StudyError(f"unknown study {name!r}: no such file, and no studies/{name}.yaml; "
                     f"studies in studies/: {', '.join(known) or 'none'}")
