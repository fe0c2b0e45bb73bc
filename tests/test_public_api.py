"""The public names: ``detkit`` (what a script uses) and ``detkit.modeling`` (the components)."""

import subprocess
import sys

import pytest

import detkit
import detkit.modeling


@pytest.mark.parametrize("package", [detkit, detkit.modeling], ids=["detkit", "detkit.modeling"])
def test_every_exported_name_resolves(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute"):
        package.not_a_name


def test_top_level_names_are_the_working_ones():
    from detkit.config import load_config
    from detkit.deploy.predictor import load_model
    from detkit.engine.trainer import Trainer
    from detkit.modeling.detector import build_detector
    from detkit.report.training import train

    assert (detkit.load_config, detkit.train, detkit.Trainer, detkit.load_model, detkit.build_detector) == \
        (load_config, train, Trainer, load_model, build_detector)


def test_importing_the_config_does_not_import_torch():
    code = "import sys, detkit.config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
