"""detkit.train = the training run, then its report (output.report); a failing report costs one line."""

from detkit.config import load_config
from detkit.errors import DetkitError
from detkit.report import training
from tests.engine.conftest import tiny_overrides


def test_report_is_optional_and_its_failure_never_fails_the_run(tmp_path, monkeypatch):
    cfg = load_config(None, tiny_overrides(tmp_path, **{"train.epochs": 1, "output.report": False}))
    training.train(cfg, quiet=True, log=lambda *_: None)
    assert (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "report.html").exists()

    def broken(run_dir, **kwargs):
        raise DetkitError("disk full")

    monkeypatch.setattr(training, "write_report", broken)
    lines = []
    cfg = load_config(None, tiny_overrides(tmp_path, **{"train.epochs": 1, "output.dir": str(tmp_path / "b")}))
    metrics = training.train(cfg, quiet=True, log=lines.append)
    assert metrics is not None and (tmp_path / "b" / "best.pt").exists()
    assert any(line.startswith("report: not written (disk full)") and "detkit report" in line for line in lines)
