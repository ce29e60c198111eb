"""Every `xdsfleet` command that README.md and docs/*.md show is one this CLI accepts: the docs
and `--help` cannot drift apart unnoticed.

Each command is parsed as the shell and click would (options, types, choices, required options),
without running it: `serve` would start a server. Commands in fenced blocks and in inline code
count; a bare `xdsfleet SUBCOMMAND` in prose only has to name a command. A `--fleet` file that
exists only in the reader's imagination (`fleet.yaml`, `prod.yaml`) is replaced by the example
fleet, which the option's existence check then finds.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from xdsfleet.cli import app

ROOT = Path(__file__).parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE_FLEET = "examples/full/fleet.yaml"
_FENCE = re.compile(r"```([a-z]*)\n(.*?)```", re.S)
_COMMAND = re.compile(r"^(?:\.venv/bin/)?xdsfleet\s+\S")
_SHELL_ENDS = {">", ">>", "|", "&&", ";", "2>", "<"}


def documented() -> list[tuple[str, list[str]]]:
    """(where, argv after `xdsfleet`) for every command shown."""
    found: list[tuple[str, list[str]]] = []
    for path in DOCUMENTS:
        text = path.read_text()
        for language, block in _FENCE.findall(text):
            if language not in ("", "sh", "bash", "console"):
                continue
            for line in block.replace("\\\n", " ").splitlines():
                found += _command(f"{path.name}: {line.strip()}", line.strip())
        # Inline code may wrap across lines: read it with the fences taken out.
        prose = _FENCE.sub("", text).replace("\n", " ")
        for span in re.findall(r"`([^`]+)`", prose):
            found += _command(f"{path.name}: `{span}`", span.strip())
    return found


def _command(where: str, text: str) -> list[tuple[str, list[str]]]:
    if not _COMMAND.match(text):
        return []
    words = shlex.split(text, comments=True)
    for i, word in enumerate(words):
        if word in _SHELL_ENDS:
            words = words[:i]
            break
    return [(where, words[1:])]


COMMANDS = documented()


def test_the_docs_show_commands() -> None:
    # A guard for the extraction itself: the README alone shows six.
    assert len([w for w, _ in COMMANDS if w.startswith("README.md")]) >= 6


def parse_error(argv: list[str]) -> str | None:
    """Why the CLI refuses `xdsfleet ARGV` (None when it parses); nothing runs."""
    group: Any = typer.main.get_command(app)
    name, *rest = argv
    command = group.commands.get(name)
    if command is None:
        return f"no command {name!r}"
    if not rest:
        return None  # prose naming the command
    rest = [
        EXAMPLE_FLEET if i and rest[i - 1] in ("--fleet", "-f") and not Path(arg).exists() else arg
        for i, arg in enumerate(rest)
    ]
    try:
        with group.make_context("xdsfleet", [name], resilient_parsing=True) as parent:
            command.make_context(name, rest, parent=parent)
    except Exception as error:
        return str(error.format_message() if hasattr(error, "format_message") else error)
    return None


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_parses(
    where: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert parse_error(argv) is None, where


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "fleet.yaml"],  # the fleet is an option
        ["render", "--node-id", "x"],  # render serves no node id
        ["explain", "--fleet", EXAMPLE_FLEET],  # --host is required
        ["render", "--type", "xds"],
        ["valdate"],  # a command that does not exist
    ],
)
def test_a_command_the_cli_does_not_take_is_caught(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert parse_error(argv) is not None
