"""What dagc says it models: the README and `dagc --help` carry the same two lines."""

from __future__ import annotations

from typer.testing import CliRunner

import dagc
from dagc.cli import app
from helpers import REPO


def _words(text: str) -> str:
    """Text with rich's wrapping, padding and box characters taken out."""
    return " ".join(word for word in text.split() if word not in {"│", "╭", "╰"})


def test_scope_is_two_lines_saying_what_is_and_is_not_modelled() -> None:
    assert len(dagc.SCOPE) == 2
    assert "prefill" in dagc.SCOPE[0] and dagc.SCOPE[1].startswith("Not modelled yet")


def test_readme_states_the_scope() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for line in dagc.SCOPE:
        assert f"- {line}\n" in readme


def test_help_states_the_scope() -> None:
    result = CliRunner().invoke(app, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    for line in dagc.SCOPE:
        assert _words(line) in _words(result.stdout)
