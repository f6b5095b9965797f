"""docs/studies.md: its key reference is the schema's, and every example study on it is a valid study."""

from __future__ import annotations

import re

import pytest

from ablate.study_doc import PAGE, page_with_keys
from ablate.study_file import load_study

EXAMPLES = [block for block in re.findall(r"```yaml\n(.*?)```", PAGE.read_text(), re.S) if block.startswith("name:")]


def test_the_key_reference_is_generated_from_the_schema_as_it_is_now():
    page = PAGE.read_text()
    assert page == page_with_keys(page), "docs/studies.md is stale: run `.venv/bin/python -m ablate.study_doc`"


def test_the_page_has_an_example_per_executor_and_a_search():
    kinds = [re.search(r"kind: (\w+)", example).group(1) for example in EXAMPLES]
    assert {"local", "debug", "slurm"} <= set(kinds) and any("search:" in e for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.split()[1] for e in EXAMPLES])
def test_every_example_study_on_the_page_is_valid(example, data_root, tmp_path):
    root = str(data_root[0])
    path = tmp_path / "example.yaml"
    path.write_text(example.replace("/shared/nano4m/scenes", root).replace("data/scenes", root))
    study = load_study(path)  # raises StudyError naming every problem
    assert study.runs or study.spec.search is not None
