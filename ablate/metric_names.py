"""Metric names: those MLflow stores as they are, and today's name of one an older store holds.

MLflow allows letters, digits and ``_ - . : /`` and spaces in a metric name and rewrites any other
character to ``_``. Every name this project logs is of the allowed kind (``eval/rgb_to_semseg/miou``),
so a study file, a report, the explorer, an MLflow filter and a history request all spell it alike.
Stores written before the cross-modal tasks were named ``<given>_to_<target>`` hold ``rgb-_semseg``
(MLflow's rewrite of ``rgb->semseg``), and before image groups were joined with ``:``,
``masks/depth_rgb_semseg/hidden_agreement`` (of ``depth+rgb+semseg``); ``current`` reads those as today's
names (the second assuming modality names without ``_``, as the generated data set's are).
"""

from __future__ import annotations

import re

ALLOWED = re.compile(r"[\w\-. :/]+", re.ASCII)
_OLD_TASK = re.compile(r"^eval/([^/]+?)(?:->|-_)([^/]+)/")
_OLD_GROUP = re.compile(r"^masks/([^/]*[_+][^/]*)/hidden_agreement$")


def mlflow_safe(name: str) -> bool:
    """Whether MLflow stores ``name`` as it is."""
    return ALLOWED.fullmatch(name) is not None


def current(name: str) -> str:
    """Today's spelling of a metric name, read from a store or a study file of any age:
    ``eval/rgb-_semseg/miou`` and ``eval/rgb->semseg/miou`` are ``eval/rgb_to_semseg/miou``."""
    name = _OLD_TASK.sub(r"eval/\1_to_\2/", name)
    return _OLD_GROUP.sub(lambda m: f"masks/{re.sub('[_+]', ':', m[1])}/hidden_agreement", name)
