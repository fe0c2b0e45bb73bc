"""README.md and the guides in docs/ stay true to the repository.

- every relative markdown link points at a file that exists, and a ``#anchor`` into a markdown file at
  one of its headings (GitHub's slugs);
- every command they quote parses: ``detkit ...`` / ``python -m detkit ...`` (also after
  ``torchrun ... -m detkit``) with :func:`detkit.cli.build_parser`, and ``python -m benchmarks.X`` /
  ``python -m scripts.X`` with the module's own ``build_parser()`` or ``parse_args(argv)`` when it has
  one (else the module must import); ``python path.py`` and ``*.sh`` paths must exist;
- README.md stays a front door (at most 250 lines) and docs/ holds the guides;
- docs/configuration.md names every config key; nothing in detkit/ points at the old ANCHORS.md.

Commands are taken from fenced code blocks and inline code spans. A failure names the file and line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import re
import shlex
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
FILES = [REPO / "README.md", *DOCS]
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SHELL_STOPS = {"&&", "||", "|", ";", "&"}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def ids(paths) -> List[str]:
    return [rel(p) for p in paths]


# --------------------------------------------------------------------------- reading markdown
def prose_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, line


def code_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, text) of every logical line of code: fenced block lines (backslash continuations
    joined, numbered by their first line) and inline code spans of the other lines."""
    in_fence, pending, start = False, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            pending = ""
            continue
        if in_fence:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line
            pending = ""
        else:
            for match in INLINE_CODE.finditer(line):
                yield number, match.group(2).strip()


def is_fenced(path: Path, number: int) -> bool:
    """Whether line ``number`` of ``path`` lies inside a fenced code block."""
    return all(n != number for n, _ in prose_lines(path))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set:
    found, seen = set(), {}
    for _, line in prose_lines(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> Iterator[Tuple[int, str]]:
    for number, line in prose_lines(path):
        line = INLINE_CODE.sub("", line)  # a link inside a code span is not a link
        for match in LINK.finditer(line):
            yield number, match.group(1)


# --------------------------------------------------------------------------- (a) links
@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_relative_links_resolve(path):
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        where = path if not file_part else (path.parent / file_part).resolve()
        if not where.exists():
            problems.append(f"{rel(path)}:{number}: link to '{target}': {file_part} does not exist")
            continue
        if anchor and where.suffix == ".md" and anchor not in anchors_of(where):
            problems.append(f"{rel(path)}:{number}: link to '{target}': no heading '#{anchor}' in "
                            f"{where.relative_to(REPO) if REPO in where.parents else where}")
    assert not problems, "dead links:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- (b), (c) commands
def command_tokens(text: str) -> List[str]:
    """The shell words of one command line, cut at the first shell operator or redirection; [] when it
    does not split (an unbalanced quote in prose is not a command)."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        return []
    for i, token in enumerate(tokens):
        if token in SHELL_STOPS or token.startswith(">") or re.match(r"^\d>", token):
            return tokens[:i]
    return tokens


def detkit_args(tokens: List[str]):
    """The arguments after ``detkit`` when the line runs the detkit command, else None."""
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # environment assignments
        tokens = tokens[1:]
    if tokens[:1] == ["detkit"]:
        return tokens[1:]
    if tokens[:3] == ["python", "-m", "detkit"]:
        return tokens[3:]
    if tokens[:1] == ["torchrun"] and "-m" in tokens:
        i = tokens.index("-m")
        if tokens[i + 1:i + 2] == ["detkit"]:
            return tokens[i + 2:]
    return None


def quoted_commands(kind: str) -> List[Tuple[str, int, List[str]]]:
    """(file, line, tokens) of every quoted command of a kind: 'detkit', 'module' or 'path'."""
    found = []
    for path in FILES:
        for number, text in code_lines(path):
            tokens = command_tokens(text)
            if not tokens:
                continue
            if kind == "detkit" and detkit_args(tokens) is not None:
                if text == " ".join(tokens) and len(tokens) <= 2 and not is_fenced(path, number):
                    continue  # `detkit` or `detkit eval` in prose names a command; it is not a command line
                found.append((rel(path), number, detkit_args(tokens)))
            elif kind == "module" and tokens[:2] == ["python", "-m"] and len(tokens) > 2 \
                    and re.match(r"^(benchmarks|scripts)\.\w+$", tokens[2]):
                found.append((rel(path), number, tokens[2:]))
            elif kind == "path" and (tokens[:1] == ["python"] and len(tokens) > 1 and tokens[1].endswith(".py")
                                     or tokens[0].endswith(".sh")):
                found.append((rel(path), number, tokens))
    return found


def parse_quietly(parse, argv: List[str]):
    """None when ``parse(argv)`` accepts the arguments (or exits 0, as --help does), else argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exc.code}"
    return None


def test_the_docs_quote_commands():
    assert len(quoted_commands("detkit")) >= 20


def test_quoted_detkit_commands_parse():
    try:
        from detkit.cli import build_parser
    except ImportError as exc:  # the command is the front door the docs describe
        pytest.fail(f"detkit.cli.build_parser is missing ({exc}): the documented commands cannot be checked")
    problems = []
    for where, number, argv in quoted_commands("detkit"):
        message = parse_quietly(lambda a: build_parser().parse_args(a), argv)
        if message:
            problems.append(f"{where}:{number}: detkit {shlex.join(argv)}\n    {message}")
    assert not problems, "commands the CLI rejects:\n" + "\n".join(problems)


def test_quoted_module_commands_parse():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    problems = []
    for where, number, (name, *argv) in quoted_commands("module"):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            problems.append(f"{where}:{number}: python -m {name}: cannot import it ({exc})")
            continue
        if callable(getattr(module, "build_parser", None)):
            message = parse_quietly(lambda a: module.build_parser().parse_args(a), argv)
        elif callable(getattr(module, "parse_args", None)):
            message = parse_quietly(module.parse_args, argv)
        else:
            message = None  # the module exists; its flags are parsed inside main()
        if message:
            problems.append(f"{where}:{number}: python -m {name} {shlex.join(argv)}\n    {message}")
    assert not problems, "benchmark / script commands that do not parse:\n" + "\n".join(problems)


def test_quoted_script_paths_exist():
    problems = []
    for where, number, tokens in quoted_commands("path"):
        script = tokens[1] if tokens[0] == "python" else tokens[0]
        if not (REPO / script).is_file():
            problems.append(f"{where}:{number}: {script} does not exist")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- (d) sizes
def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_docs_hold_the_guides():
    assert len(DOCS) >= 5, [rel(p) for p in DOCS]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [rel(p) for p in DOCS if f"({rel(p)})" not in readme]
    assert not missing, f"guides not linked from README.md: {missing}"


# --------------------------------------------------------------------------- content
def config_keys() -> List[str]:
    from detkit.config import Config

    keys = []

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                keys.append(prefix + f.name)

    walk(Config(), "")
    return keys


def test_configuration_guide_names_every_key():
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key in config_keys() if f"`{key}`" not in text]
    assert not missing, f"config keys missing from docs/configuration.md: {missing}"


def test_nothing_points_at_the_old_anchors_note():
    offenders = [f"{rel(p)}:{n}" for p in sorted((REPO / "detkit").rglob("*.py"))
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "ANCHORS.md" in line]
    offenders += [f"{rel(p)}:{n}" for p in FILES
                  for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "ANCHORS.md" in line]
    assert not offenders, f"references to ANCHORS.md (now docs/anchors.md): {offenders}"
