"""detkit report: the page of one run, partial runs, hostile names, two runs compared, the CLI."""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from detkit.cli import main as cli_main
from detkit.errors import DetkitError
from detkit.report.compare import write_comparison
from detkit.report.run_report import write_report
from tests.report.conftest import HOSTILE_CLASS, HOSTILE_FILE, write_hostile_run


class _Page(HTMLParser):
    """The tags, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags, self.text = [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def of(self, tag: str, **attrs) -> list:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def _page(path) -> _Page:
    return _Page(open(path, encoding="utf-8").read())


def test_finished_run_has_every_section_and_nothing_external(tiny_run):
    path = tiny_run / "report.html"  # written by detkit.train at the end of the run
    assert path.exists()
    page = _page(path)
    ids = {a.get("id") for _, a in page.tags}
    assert {"summary", "curves", "evaluation", "gallery", "data", "anchors", "config"} <= ids
    assert "missing" not in ids  # a finished run lacks nothing
    # Every resource is inside the page: images are data URIs, links are anchors on the page.
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), (tag, attrs)
    val_images = json.loads((tiny_run / "setup.json").read_text())["data"]["val"]["images"]
    assert len(page.of("div", **{"class": "card"})) == val_images  # fewer than 100: all of them, worst first
    assert len([a for a in page.of("img") if a["src"].startswith("data:image/png")]) >= 5  # curves, PR, confusion...


def test_gallery_size_and_threshold(tiny_run, tmp_path):
    out = write_report(str(tiny_run), str(tmp_path / "two.html"), gallery_size=2, log=lambda *_: None)
    assert len(_page(out).of("div", **{"class": "card"})) == 2


def test_partial_runs_get_a_report_and_say_what_is_missing(tiny_run, tmp_path):
    run = tmp_path / "killed"
    shutil.copytree(tiny_run, run)
    for name in ("eval.json", "detections.json", "best.pt", "report.html"):
        (run / name).unlink()
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"type": "train", "iteration": 9')  # torn by the kill
    lines = []
    page = _page(write_report(str(run), log=lines.append))
    missing = " ".join(page.text)
    assert "eval.json: missing" in missing and "detections.json: missing" in missing
    assert any("eval.json" in line for line in lines)
    assert page.of("section", id="curves")

    (run / "metrics.jsonl").write_text("not json\n")
    (run / "config.yaml").write_text("model: {backbone: {depth: [oops")
    (run / "setup.json").write_text("{")
    page = _page(write_report(str(run), log=lambda *_: None))
    text = " ".join(page.text)
    assert "config.yaml: unreadable" in text and "setup.json: unreadable" in text and "metrics.jsonl" in text


def test_not_a_run_folder(tmp_path):
    with pytest.raises(DetkitError, match="holds none of a training run's files"):
        write_report(str(tmp_path))
    with pytest.raises(DetkitError, match="does not exist"):
        write_report(str(tmp_path / "nope"))


def test_hostile_names_are_text(tmp_path):
    run = write_hostile_run(tmp_path)
    page_text = open(write_report(str(run), log=lambda *_: None), encoding="utf-8").read()
    page = _Page(page_text)
    assert not page.of("img", src="x") and not page.of("b", onmouseover="alert(1)")  # no element from a name
    text = " ".join(page.text)
    assert HOSTILE_CLASS in text and HOSTILE_FILE in text  # shown, as text
    assert HOSTILE_CLASS not in page_text  # ... because escaped in the source
    cards = page.of("div", **{"class": "card"})
    assert len(cards) == 3 and all(c["data-kinds"] in ("background missed", "missed") for c in cards)


def test_relative_data_paths_are_found_from_the_folder_the_run_started_in(tmp_path, monkeypatch):
    run = write_hostile_run(tmp_path / "project", relative=True)
    monkeypatch.chdir(tmp_path)  # not the project folder: its relative paths lead nowhere from here
    assert len(_page(write_report(str(run), log=lambda *_: None)).of("div", **{"class": "card"})) == 3
    setup = json.loads((run / "setup.json").read_text())
    (run / "setup.json").write_text(json.dumps({**setup, "cwd": str(tmp_path / "gone")}))
    page = _page(write_report(str(run), log=lambda *_: None))
    assert not page.of("div", **{"class": "card"})
    assert "gallery: the validation data in config.yaml cannot be read" in " ".join(page.text)


def test_error_counts_of_the_hand_made_run(tmp_path):
    run = write_hostile_run(tmp_path)
    text = " ".join(_page(write_report(str(run), draw_threshold=0.45, log=lambda *_: None)).text)
    # Per image: one true positive (class 1), one class-2 object missed; background false positives
    # scoring 0.6, 0.5, 0.4: two of them at or above 0.45.
    assert "1 found of 2" in text
    assert "2 error(s)" in text and "1 error(s)" in text


def test_comparison_of_two_runs(tiny_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    eval_json = json.loads((other / "eval.json").read_text())
    name = next(iter(eval_json["per_class"]))
    eval_json["per_class"][name]["AP"] = 0.75
    (other / "eval.json").write_text(json.dumps(eval_json))
    (other / "detections.json").write_text("[]")  # B finds nothing: every image disagrees
    out = write_comparison(str(tiny_run), str(other), str(tmp_path / "cmp.html"), limit=3, log=lambda *_: None)
    page = _page(out)
    assert len(page.of("div", **{"class": "card"})) == 3
    text = " ".join(page.text)
    assert "+0.750" in text  # B - A of the changed class
    assert {"summary", "curves", "metrics", "disagreements"} <= {a.get("id") for _, a in page.tags}


def test_cli(tiny_run, tmp_path):
    # One real process for the installed command line; the other cases run detkit's main in this process
    # (the same parser and exit statuses, without a Python start and a torch import each).
    done = subprocess.run([sys.executable, "-m", "detkit", "report", str(tiny_run), "--output",
                           str(tmp_path / "r.html"), "--gallery-size", "1"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "r.html") and len(_page(tmp_path / "r.html").of("img")) > 1


def test_cli_compares_two_runs_and_rejects_bad_arguments(tiny_run, tmp_path, capsys):
    def detkit(*args) -> int:
        try:
            return cli_main(["report", *args])
        except SystemExit as exc:  # argparse's usage errors
            return exc.code

    assert detkit(str(tiny_run), str(tiny_run), "--output", str(tmp_path / "c.html")) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c.html") and (tmp_path / "c.html").stat().st_size > 0
    assert detkit("a", "b", "c") == 2
    assert detkit(str(tiny_run), "--draw-threshold", "1.5") == 2
    assert "--draw-threshold must be a score in [0, 1], got 1.5" in capsys.readouterr().err
    assert detkit(str(tiny_run), "--gallery-size", "-1") == 2
    capsys.readouterr()
    assert detkit(str(tmp_path / "nope")) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
