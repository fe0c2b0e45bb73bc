"""The installed command (detkit/cli/, detkit/__main__.py, setup.cfg's console script) and the tools/*.py shims.

Parsing is checked without running anything heavy; one tiny training run, and inference on its
checkpoint, go through ``detkit.cli.main`` end to end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import detkit.cli
from detkit.cli import COMMANDS, build_parser, subcommand_parser
from detkit.cli.default_config import default_config_path
from detkit.cli.infer import split_overrides
from detkit.errors import ConfigError, DetkitError
from tests.data.tools_runner import REPO, load_script
from tests.engine.conftest import tiny_overrides

# The shim of each subcommand, and the option strings its script took before the command existed:
# existing command lines must keep working, so neither side may lose (or silently gain) a flag.
SHIMS = {
    "train": ("train.py", {"--config", "--output-dir", "--resume", "--weights", "--device", "--seed", "--quiet"}),
    "eval": ("eval.py", {"--checkpoint", "--config", "--split", "--output-dir", "--device", "--precise-bn",
                         "--trained-weights", "--precision", "--quiet"}),
    "infer": ("infer.py", {"--checkpoint", "--model", "--output-dir", "--score-threshold", "--batch-size", "--device",
                           "--precision", "--quiet", "--set", "--draw-threshold", "--every"}),
    "export": ("export.py", {"--checkpoint", "--format", "--output", "--opset", "--verify-images", "--verify-split",
                             "--no-verify", "--box-tol", "--score-tol", "--map-tol"}),
    "lint": ("lint_data.py", {"--config", "--split", "--json", "--png", "--no-decode"}),
    "report": ("report.py", {"--output", "--draw-threshold", "--gallery-size"}),
    "anchors": ("anchors.py", {"--config", "--json", "--output-dir"}),
    "convert": ("voc2coco.py", {"--format", "--root", "--names", "--split", "--ann-dir", "--img-dir", "--split-file",
                                "--classes", "--difficult", "--skip-bad-images", "--ignore-unknown-classes",
                                "--config", "--config-split", "--img-root", "--out"}),
}


def test_every_subcommand_has_a_shim_and_the_shims_are_all_listed():
    assert set(SHIMS) == set(COMMANDS) == {"train", "eval", "infer", "export", "report", "lint", "anchors",
                                             "convert"}
    scripts = {p.name for p in (REPO / "tools").glob("*.py")} - {"__init__.py"}
    assert scripts == {script for script, _ in SHIMS.values()}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_subcommand_exits_0(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        detkit.cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: detkit {command}" in out
    assert "--set" not in out  # infer's deprecated alias stays hidden


def test_top_level_help_lists_every_command_and_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        detkit.cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS) and "key=value" in out
    with pytest.raises(SystemExit) as exit_info:
        detkit.cli.main([])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        detkit.cli.main(["fit"])
    assert exit_info.value.code == 2 and "invalid choice: 'fit'" in capsys.readouterr().err


def test_python_dash_m_detkit_runs_from_any_folder(tmp_path):
    # Another folder, so that the installed package (not the checkout on sys.path) answers.
    result = subprocess.run([sys.executable, "-m", "detkit", "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "usage: detkit" in result.stdout and "convert" in result.stdout


def test_console_script_is_installed(tmp_path):
    script = shutil.which("detkit")
    if script is None:
        pytest.skip("no `detkit` command on PATH: install the package (pip install -e .) to create it")
    result = subprocess.run([script, "train", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "usage: detkit train" in result.stdout


class _Parsed(Exception):
    """Raised in place of parsing: the parser a main() built is all the test wants."""


def _parser_of_shim(script: str) -> argparse.ArgumentParser:
    """The parser tools/<script>'s main() builds, caught at the moment it would parse."""
    seen = []

    def capture(self, *args, **kwargs):
        seen.append(self)
        raise _Parsed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_intermixed_args", capture)
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(_Parsed):
            load_script(script).main([])
    return seen[0]


def _signature(parser: argparse.ArgumentParser) -> dict:
    """What a user can type and what it means: per argument its options, default, help, nargs and choices."""
    return {(tuple(a.option_strings) or a.dest): (a.dest, a.default, a.help, a.nargs, a.choices, a.required,
                                                   getattr(a.type, "__name__", a.type))
            for a in parser._actions if not isinstance(a, argparse._SubParsersAction)}


def _options(parser: argparse.ArgumentParser) -> set:
    return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}


@pytest.mark.parametrize("command", sorted(SHIMS))
def test_shim_and_subcommand_take_the_same_flags_as_the_script_did(command):
    script, flags = SHIMS[command]
    shim = _parser_of_shim(script)
    sub = subcommand_parser(build_parser(), command)
    assert _options(shim) == _options(sub) == flags
    assert _signature(shim) == _signature(sub)


def test_shims_hold_no_logic_and_nothing_edits_sys_path():
    for path in sorted((REPO / "tools").glob("*.py")) + sorted((REPO / "detkit").rglob("*.py")):
        assert "sys.path" not in path.read_text(encoding="utf-8"), f"{path} edits sys.path"
    for command, (script, _) in SHIMS.items():
        module = load_script(script)
        assert module.main.__module__ == f"detkit.cli.{command}"


def test_infer_splits_overrides_from_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a=b.jpg").write_bytes(b"")  # '=' in a file name, but no dotted key: an input anyway
    (tmp_path / "eval.fold_bn=false").write_bytes(b"")  # an existing file shaped like an override: an input
    inputs, overrides = split_overrides(["photos/", "x.jpg", "model.roi_head.nms_thresh=0.6", "a=b.jpg",
                                         "eval.fold_bn=false", "eval.precision=fp32", "*.png", "photos/c=d.jpg"])
    assert inputs == ["photos/", "x.jpg", "a=b.jpg", "eval.fold_bn=false", "*.png", "photos/c=d.jpg"]
    assert overrides == ["model.roi_head.nms_thresh=0.6", "eval.precision=fp32"]


def test_infer_passes_overrides_wherever_they_are_and_set_still_works(tmp_path, monkeypatch, capsys):
    import detkit.deploy.infer_files as infer_files

    calls = []

    def fake_infer(inputs, **kwargs):
        calls.append((list(inputs), kwargs))
        return {"processed": len(inputs), "failed": [], "detections": 0}

    monkeypatch.setattr(infer_files, "infer_inputs", fake_infer)
    argv = ["infer", "--checkpoint", "best.pt", "photos/", "model.roi_head.nms_thresh=0.6", "--quiet", "x.jpg",
            "--precision", "fp32", "eval.fold_bn=false"]
    assert detkit.cli.main(argv) == 0
    inputs, kwargs = calls[-1]
    assert inputs == ["photos/", "x.jpg"]
    assert kwargs["overrides"] == ["model.roi_head.nms_thresh=0.6", "eval.fold_bn=false", "eval.precision=fp32"]
    assert "note: --set" not in capsys.readouterr().err
    # the deprecated spelling gives the same call, with a one-line note on stderr
    assert detkit.cli.main(["infer", "--checkpoint", "best.pt", "x.jpg", "--set", "eval.fold_bn=false"]) == 0
    assert calls[-1][1]["overrides"] == ["eval.fold_bn=false"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--set is deprecated" in err[0] and "key=value" in err[0]
    # overrides but no input: a usage error naming what was taken as overrides
    assert detkit.cli.main(["infer", "--checkpoint", "best.pt", "eval.fold_bn=false"]) == 2
    assert "no INPUT" in capsys.readouterr().err and len(calls) == 2


def test_a_detkit_error_no_subcommand_catches_is_printed_with_status_1(monkeypatch, capsys):
    def failing(args):
        raise ConfigError("key 'x' is wrong")

    monkeypatch.setattr(COMMANDS["anchors"], "run", failing)
    assert detkit.cli.main(["anchors"]) == 1
    assert capsys.readouterr().err == "error: key 'x' is wrong\n"


def test_train_finds_its_default_config_from_any_folder(tmp_path, monkeypatch):
    import detkit.engine.trainer as trainer
    from detkit.config import load_config

    monkeypatch.chdir(tmp_path)
    assert Path(default_config_path()) == REPO / "configs" / "synthetic.yaml"
    seen = []
    monkeypatch.setattr(trainer, "train", lambda cfg, **kwargs: seen.append(cfg))
    assert detkit.cli.main(["train", "--quiet", "train.epochs=3"]) == 0
    assert seen[0] == load_config(str(REPO / "configs" / "synthetic.yaml"), ["train.epochs=3"])


def test_missing_default_config_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import detkit.cli.default_config as default_config

    monkeypatch.setattr(default_config, "_PACKAGE_PARENT", tmp_path)
    with pytest.raises(DetkitError, match=r"configs/synthetic.yaml.*--config FILE"):
        default_config.default_config_path()
    assert detkit.cli.main(["train", "--quiet"]) == 1
    assert "--config FILE" in capsys.readouterr().err


def test_train_then_infer_through_the_command(tmp_path, monkeypatch, capsys):
    """A two-iteration run on a small synthetic set, then inference with an override and an '=' file name."""
    run = tmp_path / "run"
    overrides = tiny_overrides(tmp_path, **{"train.epochs": 1, "train.max_iters": 2,
                                           "model.roi_head.score_thresh": 0.0})
    overrides = [o for o in overrides if not o.startswith("output.dir=")]  # --output-dir sets it
    assert detkit.cli.main(["train", "--output-dir", str(run), "--quiet", "--seed", "1", *overrides]) == 0
    assert (run / "last.pt").is_file() and (run / "config.yaml").is_file()
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    name = "tile.v2=b.png"  # shaped like a dotted key=value, but an existing file: an input
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / name)
    out = tmp_path / "out"
    monkeypatch.chdir(images)  # the file given by its bare name, as a user in that folder types it
    rc = detkit.cli.main(["infer", "--checkpoint", str(run / "last.pt"), name, "--output-dir", str(out), "--quiet",
                          "eval.fold_bn=false", "model.roi_head.detections_per_img=5"])
    assert rc == 0, capsys.readouterr().err
    assert "1 image(s) processed" in capsys.readouterr().out
    found = json.loads((out / "detections.json").read_text())
    assert 0 < len(found) <= 5 and {d["file_name"] for d in found} == {name}
    assert (out / name).is_file()
