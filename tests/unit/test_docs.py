"""Documentation checks: what README.md and docs/**/*.md name must exist.

1. every ``make <target>`` in a code span or block is a target of the Makefile;
2. every ``scripts/<name>.py`` and ``python -m scripts.<name>`` is a script of the repository;
3. every alert of ``k8s_charts/alert_rules.py`` has a runbook heading whose GitHub anchor is the one its
   ``runbook_url`` points at, with first checks (a code block) in its section;
4. every relative link (``[text](path)``, ``[text](path#anchor)``, and bare ``file.md#anchor``) points at an
   existing file and, for Markdown, an existing heading;
5. every diagram the README and the docs show exists and is an image.

Fast: plain text and the alert names, no synth. Each check is a pure function returning its problems, and
each is also shown a seeded failure built from a small in-memory text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from k8s_charts.alert_rules import RUNBOOK_DOC, alert_names, runbook_url

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "Makefile"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# What `make diagram` copies into docs/diagrams/ for the README (scripts/diagram.py).
COMMITTED_DIAGRAMS = ("docs/diagrams/dev.svg", "docs/diagrams/prod.svg")
IMAGE_SUFFIXES = (".svg", ".png", ".jpg", ".jpeg", ".gif")

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
# Makefile rules: "name [name ...]: prerequisites", never "VAR := value" (the class stops at ':' and '=').
_RULE = re.compile(r"^([^\s#:=][^:=#]*?)\s*:(?!=)")
_TARGET_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
# "make [VAR=value ...] target": the first word after make and its variable assignments.
_MAKE = re.compile(r"(?<![\w./-])make((?:[ \t]+[A-Za-z_][A-Za-z0-9_]*=\S*)*)[ \t]+([a-z][a-z0-9_-]*)")
_SCRIPT_PATH = re.compile(r"(?<![\w./-])scripts/([A-Za-z0-9_]+)\.py\b")
_SCRIPT_MODULE = re.compile(r"-m[ \t]+scripts\.([A-Za-z0-9_]+)")
_LINK = re.compile(r"(!?)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
_BARE_MD_ANCHOR = re.compile(r"(?<![\w/.#(:-])((?:\.\.?/)*[\w-][\w./-]*\.md)#([\w-]+)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")


# --- reading Markdown -----------------------------------------------------------------------------------


def split_code(markdown: str) -> tuple[str, list[str]]:
    """Return the text with its code blanked out, and the code: fenced blocks first, then spans."""
    prose: list[str] = []
    blocks: list[str] = []
    block: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, block = match.group(1), []
                prose.append("")
            else:
                prose.append(line)
        elif (
            match
            and match.group(1)[0] == fence[0]
            and len(match.group(1)) >= len(fence)
            and not line.strip(fence[0] + " \t")
        ):
            blocks.append("\n".join(block))
            fence = None
            prose.append("")
        else:
            block.append(line)
            prose.append("")
    if fence is not None:  # an unclosed fence runs to the end of the document
        blocks.append("\n".join(block))
    spans: list[str] = []
    paragraphs = []
    # A code span may wrap lines but never crosses a blank line.
    for paragraph in "\n".join(prose).split("\n\n"):
        spans += [m.group(2) for m in _CODE_SPAN.finditer(paragraph)]
        paragraphs.append(_CODE_SPAN.sub(lambda m: " " * len(m.group(0)), paragraph))
    return "\n\n".join(paragraphs), blocks + spans


def github_anchor(heading: str) -> str:
    """Return GitHub's anchor of a heading: lowercase, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts with its text only
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    """Return (level, text) of every ATX heading outside code blocks."""
    prose, _ = split_code(markdown)
    found = []
    for line in prose.splitlines():
        match = _HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(markdown: str) -> set[str]:
    """Return every anchor GitHub gives the document: headings (repeats get -1, -2, ...) and HTML anchors."""
    seen: dict[str, int] = {}
    result = set(_HTML_ANCHOR.findall(markdown))
    for _, text in headings(markdown):
        base = github_anchor(text)
        count = seen.get(base, 0)
        result.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return result


def section(markdown: str, anchor: str) -> str | None:
    """Return the text under the heading with ``anchor``, up to the next heading of its level or higher."""
    lines = markdown.splitlines()
    prose, _ = split_code(markdown)
    prose_lines = prose.splitlines()
    seen: dict[str, int] = {}
    start: int | None = None
    level = 0
    for index, line in enumerate(prose_lines):
        match = _HEADING.match(line)
        if not match:
            continue
        depth = len(match.group(1))
        if start is not None and depth <= level:
            return "\n".join(lines[start:index])
        base = github_anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        if start is None and (base if count == 0 else f"{base}-{count}") == anchor:
            start, level = index + 1, depth
    return "\n".join(lines[start:]) if start is not None else None


# --- 1. make targets ------------------------------------------------------------------------------------


def makefile_targets(makefile: str) -> set[str]:
    """Return the named targets of a Makefile (not special targets, variables or file targets)."""
    targets: set[str] = set()
    for line in makefile.splitlines():
        match = _RULE.match(line)
        if match:
            targets.update(name for name in match.group(1).split() if _TARGET_NAME.match(name))
    return targets


def make_problems(markdown: str, targets: set[str], source: str = "<text>") -> list[str]:
    """Return every ``make <target>`` in the code of ``markdown`` whose target the Makefile lacks."""
    _, code = split_code(markdown)
    return [
        f"{source}: `make {match.group(2)}` is not a Makefile target (targets: {', '.join(sorted(targets))})"
        for text in code
        for match in _MAKE.finditer(text)
        if match.group(2) not in targets
    ]


# --- 2. scripts -----------------------------------------------------------------------------------------


def script_problems(markdown: str, root: Path, source: str = "<text>") -> list[str]:
    """Return every ``scripts/<name>.py`` or ``-m scripts.<name>`` that has no file under ``root/scripts``."""
    names = {m.group(1) for m in _SCRIPT_PATH.finditer(markdown)} | {
        m.group(1) for m in _SCRIPT_MODULE.finditer(markdown)
    }
    return [
        f"{source}: scripts/{name}.py does not exist"
        for name in sorted(names)
        if not (root / "scripts" / f"{name}.py").is_file()
    ]


# --- 3. runbooks ----------------------------------------------------------------------------------------


def runbook_problems(urls: Mapping[str, str], documents: Mapping[str, str]) -> list[str]:
    """Return every alert whose runbook_url names no document, no heading, or a section without first checks.

    Args:
        urls: alert name -> its runbook_url (``<repo-relative document>#<anchor>``).
        documents: repo-relative path -> Markdown text.
    """
    problems = []
    for alert, url in urls.items():
        document, _, anchor = url.partition("#")
        text = documents.get(document)
        if text is None:
            problems.append(f"{alert}: runbook {url} names {document}, not a document of the repository")
        elif not anchor:
            problems.append(f"{alert}: runbook {url} has no #anchor")
        else:
            body = section(text, anchor)
            if body is None:
                problems.append(f"{alert}: {document} has no heading whose anchor is #{anchor}")
            elif not split_code(body)[1]:
                problems.append(f"{alert}: the runbook section #{anchor} has no first checks (a code block)")
    return problems


# --- 4. relative links ----------------------------------------------------------------------------------


def link_targets(markdown: str) -> list[tuple[bool, str]]:
    """Return (is an image, target) of every inline and reference link outside code."""
    prose, _ = split_code(markdown)
    found = [(bool(m.group(1)), m.group(2)) for m in _LINK.finditer(prose)]
    return found + [(False, target) for target in _REFERENCE.findall(prose)]


def _anchor_problem(document: Path, anchor: str, own_text: str, own_path: Path, label: str) -> str | None:
    if document.suffix != ".md" or not anchor:
        return None
    text = own_text if document == own_path else document.read_text()
    if anchor not in anchors(text):
        return f"{label}: {document.name} has no heading with the anchor #{anchor}"
    return None


def link_problems(doc_path: Path, markdown: str, root: Path) -> list[str]:
    """Return every relative link of ``markdown`` (read as the file ``doc_path``) that leads nowhere."""
    label = str(doc_path.relative_to(root)) if doc_path.is_relative_to(root) else str(doc_path)
    problems = []
    for _, target in link_targets(markdown):
        if _SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (doc_path.parent / unquote(path_part)).resolve() if path_part else doc_path
        if not resolved.is_relative_to(root):
            problems.append(f"{label}: link {target} points outside the repository")
        elif path_part and not resolved.exists():
            problems.append(f"{label}: link {target}: {path_part} does not exist")
        else:
            problem = _anchor_problem(resolved, anchor, markdown, doc_path, f"{label}: link {target}")
            if problem:
                problems.append(problem)
    # Bare references such as docs/operations.md#nodenotready (runbook URLs, code spans): relative to the
    # document, or else to the repository root.
    for match in _BARE_MD_ANCHOR.finditer(markdown):
        relative, anchor = match.group(1), match.group(2)
        candidates = [(doc_path.parent / relative).resolve(), (root / relative).resolve()]
        existing = [c for c in candidates if c.is_file() and c.is_relative_to(root)]
        if not existing:
            problems.append(f"{label}: {relative}#{anchor}: {relative} does not exist")
        elif all(_anchor_problem(c, anchor, markdown, doc_path, label) for c in existing):
            problems.append(f"{label}: {relative}#{anchor}: no heading with the anchor #{anchor}")
    return problems


# --- 5. diagrams ----------------------------------------------------------------------------------------


def shown_images(doc_path: Path, markdown: str) -> list[Path]:
    """Return the files of every relative image ``markdown`` shows."""
    return [
        (doc_path.parent / unquote(target.partition("#")[0])).resolve()
        for image, target in link_targets(markdown)
        if image and not _SCHEME.match(target)
    ]


def diagram_problems(doc_path: Path, markdown: str) -> list[str]:
    """Return every image ``markdown`` shows that is missing, not an image, or an SVG without <svg."""
    problems = []
    for image in shown_images(doc_path, markdown):
        if not image.is_file():
            problems.append(f"{doc_path.name}: the diagram {image.name} does not exist")
        elif image.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{doc_path.name}: {image.name} is shown as an image but is not one")
        elif image.suffix.lower() == ".svg" and "<svg" not in image.read_text(errors="replace"):
            problems.append(f"{doc_path.name}: {image.name} is not an SVG drawing")
    return problems


# --- the repository's documents ---------------------------------------------------------------------------


def documents() -> dict[Path, str]:
    """Return README.md and every Markdown file under docs/, by path."""
    return {path: path.read_text() for path in [README, *sorted(DOCS.rglob("*.md"))]}


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_every_make_target_in_the_docs_exists() -> None:
    targets = makefile_targets(MAKEFILE.read_text())
    assert {"synth", "test", "lint", "bench", "manifests", "snapshots", "clean"} <= targets
    docs = documents()
    problems = [p for path, text in docs.items() for p in make_problems(text, targets, _relative(path))]
    assert problems == []


def test_every_script_in_the_docs_exists() -> None:
    problems = [p for path, text in documents().items() for p in script_problems(text, ROOT, _relative(path))]
    assert problems == []


def test_every_alert_has_a_runbook_section_at_its_url() -> None:
    names = alert_names()
    assert names, "no alert rules found"
    urls = {name: runbook_url(name) for name in names}
    assert {url.partition("#")[0] for url in urls.values()} == {RUNBOOK_DOC}
    assert runbook_problems(urls, {_relative(path): text for path, text in documents().items()}) == []


def test_every_relative_link_leads_to_a_file_and_heading() -> None:
    problems = [p for path, text in documents().items() for p in link_problems(path, text, ROOT)]
    assert problems == []


def test_every_diagram_shown_exists() -> None:
    docs = documents()
    problems = [p for path, text in docs.items() for p in diagram_problems(path, text)]
    assert problems == []
    shown = {_relative(image) for path, text in docs.items() for image in shown_images(path, text)}
    assert set(COMMITTED_DIAGRAMS) <= shown


# --- the checks can fail ------------------------------------------------------------------------------------


def test_makefile_targets_skip_variables_special_and_file_targets() -> None:
    makefile = (
        "STAGE ?=\nexport PATH := a:b\n.PHONY: synth\n$(VENV)/.installed: requirements.lock\n"
        "synth: install ## synthesize\n\t$(CDK) synth\nbuild test: synth\n"
    )
    assert makefile_targets(makefile) == {"synth", "build", "test"}


def test_make_check_fails_on_an_unknown_target() -> None:
    text = "Run `make deploy` first.\n\n```bash\nmake synth STAGE=dev\nUPDATE_SNAPSHOTS=1 make test\n```\n"
    problems = make_problems(text, {"synth", "test"})
    assert len(problems) == 1
    assert "`make deploy` is not a Makefile target" in problems[0]


def test_script_check_fails_on_a_missing_script() -> None:
    text = "Run `python -m scripts.nope` or `scripts/missing_tool.py`; `scripts/diagram.py` exists.\n"
    assert script_problems(text, ROOT) == [
        "<text>: scripts/missing_tool.py does not exist",
        "<text>: scripts/nope.py does not exist",
    ]


def test_github_anchors_follow_githubs_rules() -> None:
    assert github_anchor("Database (RDS PostgreSQL)") == "database-rds-postgresql"
    heading = "Point in time (RPO 5 minutes, the usual case)"
    assert github_anchor(heading) == "point-in-time-rpo-5-minutes-the-usual-case"
    assert github_anchor("`make synth` & [links](x.md)!") == "make-synth--links"
    assert github_anchor("GpuXidErrors") == "gpuxiderrors"
    assert anchors("# Setup\n## Setup\n```\n# not a heading\n```\n") == {"setup", "setup-1"}


def test_runbook_check_fails_on_a_missing_or_misspelled_heading() -> None:
    operations = (
        "## Alert runbooks\n\n### GpuUtilizationLow\n\n```promql\nDCGM_FI_DEV_GPU_UTIL < 20\n```\n\n"
        "### Gpu Saturated\n\n```promql\nDCGM_FI_DEV_GPU_UTIL > 95\n```\n\n"
        "### NodeNotReady\n\nNo checks yet.\n"
    )
    urls = {
        "GpuUtilizationLow": "docs/operations.md#gpuutilizationlow",
        "GpuSaturated": "docs/operations.md#gpusaturated",  # the heading's anchor is gpu-saturated
        "NodeNotReady": "docs/operations.md#nodenotready",
        "Elsewhere": "docs/runbooks.md#elsewhere",
    }
    problems = runbook_problems(urls, {"docs/operations.md": operations})
    assert [p.split(":", 1)[0] for p in problems] == ["GpuSaturated", "NodeNotReady", "Elsewhere"]
    assert "has no heading whose anchor is #gpusaturated" in problems[0]
    assert "has no first checks" in problems[1]
    assert "not a document of the repository" in problems[2]


def test_link_check_fails_on_a_missing_file_or_heading() -> None:
    text = (
        "# Seeded\n\n## Local part\n\n"
        "[fine](backup-and-restore.md#cluster-loss) [web](https://example.com/x.md#y) [here](#local-part)\n"
        "[gone](no-such-file.md) [bad anchor](backup-and-restore.md#no-such-heading) [no local](#nowhere)\n"
        "[out](../../outside.md) and the bare docs/operations.md#no-such-runbook\n"
        "`[in code](ignored.md)`\n"
    )
    problems = link_problems(DOCS / "seeded.md", text, ROOT)
    assert len(problems) == 5, problems
    assert "no-such-file.md does not exist" in problems[0]
    assert "backup-and-restore.md has no heading with the anchor #no-such-heading" in problems[1]
    assert "seeded.md has no heading with the anchor #nowhere" in problems[2]
    assert "points outside the repository" in problems[3]
    assert "docs/operations.md#no-such-runbook: no heading" in problems[4]


def test_diagram_check_fails_on_a_missing_or_non_image_diagram() -> None:
    text = "![dev](diagrams/dev.svg)\n![gone](diagrams/staging.svg)\n![not an image](architecture.md)\n"
    problems = diagram_problems(DOCS / "seeded.md", text)
    assert problems == [
        "seeded.md: the diagram staging.svg does not exist",
        "seeded.md: architecture.md is shown as an image but is not one",
    ]
