"""Named run configurations of the ``ehrmamba_main`` job, kept as YAML under ``run_configs/``.

A preset is a whole recipe (task horizons, tokenizer, model and optimiser), so that a run on
another dataset is a config change: paste it into the launchpad, or pass it to
``dagster job launch -c``. ``mimic_iv_paper`` is the EHRMamba paper's setup on MIMIC-IV on FHIR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RUN_CONFIG_DIR = Path(__file__).resolve().parent / "run_configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in RUN_CONFIG_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = RUN_CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"no run config preset {name!r}; presets: {', '.join(preset_names())}")
    return path


def load_preset(name: str) -> dict[str, Any]:
    """The run config of preset ``name`` (e.g. ``mimic_iv_paper``)."""
    return yaml.safe_load(preset_path(name).read_text())
