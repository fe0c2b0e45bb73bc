"""The report pages rendered from Jinja2 templates (detkit/report/templates) with autoescaping on.

Class names, file names, config text and data-report lines come from users' files: autoescaping
turns every ``{{ value }}`` into text, so a VOC class named ``<img src=x onerror=alert(1)>`` shows as
those characters and never runs. Nothing is marked safe except the data URIs detkit encodes itself.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

__all__ = ["render_page"]

_ENVIRONMENT = Environment(loader=PackageLoader("detkit.report", "templates"),
                           autoescape=select_autoescape(default=True, default_for_string=True),
                           undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _number(value, digits: int = 3) -> str:
    """A metric as text: fixed digits, '-' for missing."""
    if value is None:
        return "-"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


_ENVIRONMENT.filters["number"] = _number


def render_page(template: str, context: dict) -> str:
    """The HTML of ``template`` (a file in detkit/report/templates) with ``context``."""
    return _ENVIRONMENT.get_template(template).render(**context)
