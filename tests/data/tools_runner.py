"""Run a tools/*.py or benchmarks/*.py script's main(argv) in this process (faster than a subprocess)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_script(script: str, folder: str = "tools"):
    """The module of ``folder/script`` (e.g. to test one of its functions), loaded under a private name."""
    path = REPO / folder / script
    spec = importlib.util.spec_from_file_location(f"_detkit_{folder}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(script: str, *argv: str, folder: str = "tools") -> int:
    return load_script(script, folder).main(list(argv))
