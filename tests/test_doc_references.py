"""Every reference in code and docs resolves inside the repository.

A clone must stand alone: a comment citing "decision 5" or "rule 14", a docstring pointing at
`docs/policy.md, "retry"`, a Markdown link to `kubernetes.md#never-making-things-worse` or a path
like `server/sotw.py` must lead somewhere that exists in this repository, and nothing may cite a
design file kept outside it.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".proto", ".cfg", ".txt"}
PATH_SUFFIXES = "py|md|yaml|yml|proto|sh|png|toml|json|js"

URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared|\bshared/[\w-]+\.md")
# A path is checked when it starts at a folder of this repository or of the package: other paths
# in the docs are examples of a user's own layout (`routes/gateway.yaml` beside a Fleet file).
FOLDERS = (
    "xdsfleet|tests|docs|benchmarks|harness|k8s|envoy|examples|protos|server|cache|translate|"
    "pipeline|tools|status|sources|documents|model|telemetry|admin"
)
PATH = re.compile(
    rf"(?<![\w/.$-])((?:{FOLDERS})/(?:[\w.-]+/)*[\w.-]+\.(?:{PATH_SUFFIXES}))(?![\w/])"
)
SECTION = re.compile(r"([\w./-]+\.md),\s*\"([^\"]+)\"")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DECISION = re.compile(r"\bdecisions? (\d+)\b", re.IGNORECASE)
RULE = re.compile(r"\brule[ _](\d+)\b")
# Files where "rule N" means a rule of docs/xds-protocol.md (elsewhere it can be a route rule).
PROTOCOL_FILES = re.compile(
    r"^(xdsfleet/(server|cache|pipeline)/|benchmarks/|docs/(architecture|xds-protocol)|"
    r"BENCHMARKS\.md|tests/test_(sotw|delta)_protocol|tests/test_ads_server)"
)


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [
        ROOT / name
        for name in listed
        if (Path(name).suffix in TEXT_SUFFIXES or Path(name).name == "Makefile")
        and (ROOT / name).is_file()
        and not name.startswith(("xdsfleet/admin/v1/", "node_modules/"))
        # This file's own examples of dangling references are meant to dangle.
        and name != "tests/test_doc_references.py"
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"\s", "-", text)


@cache
def headings(path: Path) -> set[str]:
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip()
            found.add(title.replace("`", "").lower())
            found.add(slug(title))
    return found


@cache
def numbered(path: Path) -> set[int]:
    """Numbers of the items of numbered lists in a Markdown file."""
    return {int(m.group(1)) for m in re.finditer(r"^(\d+)\. ", path.read_text(), re.MULTILINE)}


def resolve(reference: str, source: Path) -> Path | None:
    parents = [p for p in source.parents if p == ROOT or ROOT in p.parents]
    for base in (*parents, ROOT / "xdsfleet"):
        candidate = (base / reference).resolve()
        if candidate.exists() and ROOT in candidate.parents:
            return candidate
    return None


def problems_in(path: Path) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    text = URL.sub("", path.read_text())
    found: list[str] = []
    for m in OUTSIDE.finditer(text):
        found.append(f"cites {m.group(0)!r}, which a clone does not contain")
    for m in PATH.finditer(text):
        if "*" not in m.group(1) and resolve(m.group(1), path) is None:
            found.append(f"names {m.group(1)}, which does not exist")
    for m in SECTION.finditer(text):
        target = resolve(m.group(1), path)
        # A comment may wrap a section's name over two lines.
        section = re.sub(r"\s*\n\s*#?\s*", " ", m.group(2))
        if target is not None and section.replace("`", "").lower() not in headings(target):
            found.append(f'cites {m.group(1)}, "{section}": no such section')
    if path.suffix == ".md":
        for m in LINK.finditer(text):
            file_part, _, anchor = m.group(1).partition("#")
            target = resolve(file_part, path) if file_part else path
            if target is None:
                found.append(f"links {m.group(1)}, which does not exist")
            elif anchor and target.suffix == ".md" and anchor not in headings(target):
                found.append(f"links {m.group(1)}: no such heading")
    decisions = numbered(ROOT / "docs/architecture.md")
    for m in DECISION.finditer(text):
        if int(m.group(1)) not in decisions:
            found.append(f"cites decision {m.group(1)}, not in docs/architecture.md")
    if PROTOCOL_FILES.match(relative):
        rules = numbered(ROOT / "docs/xds-protocol.md")
        for m in RULE.finditer(text):
            if int(m.group(1)) not in rules:
                found.append(f"cites rule {m.group(1)}, not in docs/xds-protocol.md")
    return [f"{relative}: {problem}" for problem in found]


def test_every_reference_resolves_inside_the_repository() -> None:
    problems = [p for path in tracked_files() for p in problems_in(path)]
    assert problems == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Spelled in parts, so that this file itself cites nothing outside the repository.
        ("see " + "DESIGN" + ".md", "cites 'DESIGN" + ".md'"),
        ("see docs/nowhere.md", "names docs/nowhere.md"),
        ('see docs/policy.md, "Nothing like it"', 'cites docs/policy.md, "Nothing like it"'),
        ("as decision 99 says", "cites decision 99"),
        ("[x](architecture.md#no-such-heading)", "no such heading"),
    ],
)
def test_a_dangling_reference_is_reported(tmp_path: Path, text: str, expected: str) -> None:
    # The checker itself must catch each kind; a file in docs/ sees every rule but `rule N`.
    probe = ROOT / "docs" / f"probe-{tmp_path.name}.md"
    probe.write_text(text + "\n")
    try:
        reported = problems_in(probe)
    finally:
        probe.unlink()
    assert any(expected in problem for problem in reported), reported
