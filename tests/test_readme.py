"""The README stays true: its config table is the code's, and its commands exist."""

from __future__ import annotations

from pathlib import Path

from resguardo.cli import build_parser
from resguardo.commands.config import all_settings, readme_with_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_config_table_matches_the_code() -> None:
    text = README.read_text()
    assert readme_with_table(text) == text, "run `make docs` to refresh the README's config table"
    for row in all_settings():
        assert row["variable"] in text


def test_quick_start_commands_are_documented() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text


def test_every_cli_command_in_the_readme_exists() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    known = set(sub.choices)
    mentioned = {
        line.split("resguardo ", 1)[1].split()[0]
        for line in README.read_text().splitlines()
        if "bin/resguardo " in line
    }
    assert mentioned <= known, f"README mentions commands that do not exist: {mentioned - known}"
