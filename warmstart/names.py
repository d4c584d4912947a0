"""Model names: the rule a name follows (config and model store alike) and a name as a file name."""

from __future__ import annotations

import re

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
MODEL_NAME_RULE = "1-128 letters, digits or ._:/- starting with a letter or digit"


def safe_name(name: str) -> str:
    """A model or replica name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
