"""Where ``detkit train`` finds its default config, configs/synthetic.yaml, from any working directory.

The tools/ scripts found it next to themselves, inside the repository. The installed command finds it
next to the package: an editable install (``pip install -e .``, the install the README gives) runs
detkit from the repository, whose configs/ folder sits beside detkit/. A wheel does not carry configs/,
and the built-in defaults of :mod:`detkit.config` are not a stand-in (they describe an 800-pixel
ResNet-FPN setup for real data: 1000 proposals, 1024-wide FC layers, manual anchors, not the small
synthetic run of configs/synthetic.yaml), so a missing file is an error that says what to give instead.
"""

from __future__ import annotations

from pathlib import Path

from detkit.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "default_config_path"]

DEFAULT_CONFIG = "configs/synthetic.yaml"  # relative to the repository root

# detkit/cli/default_config.py -> the folder holding detkit/ (the repository root of an editable install)
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def default_config_path() -> str:
    """The absolute path of the repository's configs/synthetic.yaml beside the installed package.

    Raises:
        ConfigError: the file is not there (a non-editable install): give ``--config FILE``.
    """
    path = _PACKAGE_PARENT / DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"the default config {DEFAULT_CONFIG} is not at '{path}' (it ships with the repository, "
                          f"not inside the installed package): give --config FILE, e.g. a copy of the repository's "
                          f"{DEFAULT_CONFIG}, or install detkit from its repository with pip install -e .")
    return str(path)
