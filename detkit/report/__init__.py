"""Run reports: one self-contained HTML page about a training run, or two runs side by side.

    run_contents.py    what a run folder holds (partial runs included) and what is missing
    validation_set.py  the run's validation images and ground truth, found again from config.yaml
    error_analysis.py  every detection's outcome by COCOeval's matching at IoU 0.5 (TP or error kind)
    gallery.py         validation images drawn with their outcomes, worst first
    figures.py         the curves and plots as embedded PNGs
    page.py            Jinja2 rendering with autoescaping (templates/)
    run_report.py      write_report(RUN_DIR): the page of one run
    compare.py         write_comparison(RUN_A, RUN_B): two runs side by side
    training.py        train(cfg): the training run, then its report (what `detkit train` does)
"""

__all__ = ["write_report", "write_comparison"]


def __getattr__(name: str):
    if name == "write_report":
        from detkit.report.run_report import write_report

        return write_report
    if name == "write_comparison":
        from detkit.report.compare import write_comparison

        return write_comparison
    raise AttributeError(f"module 'detkit.report' has no attribute {name!r}")
