"""The `dagc` command line: exit codes, which stream carries what, and internal errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import dagc
from dagc.cli import ISSUES_URL, app
from helpers import REPO, config, example_files

SEED = REPO / "examples" / "seed"
BASELINE = SEED / "baseline_tp8_pp2.dag"
MA = SEED / "ma_separation.dag"
# ma_separation.dag line 20 is `  attention on attn tp=12`; `12` starts in column 24.
MA_WARNING = (
    f"{MA}:20:24: warning: 32 heads do not split evenly over tp=12:"
    " ranks 0-7 get 3, ranks 8-11 get 2"
)

runner = CliRunner()


def _bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.dag"
    path.write_text(config({3: "  hiden = 1024; hidden = 1024"}))
    return path


def test_check_seed_examples() -> None:
    result = runner.invoke(app, ["check", str(BASELINE), str(MA)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert MA_WARNING in result.stderr.splitlines()
    assert result.stderr.splitlines()[-1] == "dagc: checked 2 files, 0 with errors, 1 warning"


def test_check_every_example() -> None:
    files = [str(path) for path in example_files()]
    result = runner.invoke(app, ["check", *files])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""


def test_check_bad_input(tmp_path: Path) -> None:
    path = _bad_file(tmp_path)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}:3:3: error: unknown model key `hiden`"
    assert "      = help: did you mean `hidden`?" in lines  # gutter: len("3") + 5
    assert lines[-1] == "dagc: checked 1 file, 1 with errors, 0 warnings"
    assert "Traceback" not in result.output


def test_check_goes_on_after_a_failed_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(_bad_file(tmp_path)), str(MA)])
    assert result.exit_code == 2
    assert MA_WARNING in result.stderr.splitlines()
    assert result.stderr.splitlines()[-1] == "dagc: checked 2 files, 1 with errors, 1 warning"


def test_check_counts_warnings_of_failing_files_and_spaces_diagnostics(tmp_path: Path) -> None:
    # bad.dag has an error (line 9) and a warning (line 3); ma_separation.dag one warning.
    bad = tmp_path / "bad.dag"
    bad.write_text(config({3: "  hidden = 1024; capacity_factor = 2", 9: "  seq = 0"}))
    with pytest.raises(dagc.DiagnosticError) as info:
        dagc.compile_file(bad)
    warning, error = info.value.diagnostics
    (ma_warning,) = dagc.compile_file(MA).warnings
    result = runner.invoke(app, ["check", str(bad), str(MA)])
    assert result.exit_code == 2
    assert result.stdout == ""
    # One blank line between diagnostics, within a file and between files; none before the
    # summary, which counts the failing file's warning too.
    assert result.stderr == (
        f"{warning.render()}\n\n{error.render()}\n\n{ma_warning.render()}\n"
        "dagc: checked 2 files, 1 with errors, 2 warnings\n"
    )
    assert warning.render().startswith(f"{bad}:3:36: warning: ")
    assert error.render().startswith(f"{bad}:9:9: error: ")


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "latin1"])
def test_unreadable_input_exits_2(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "input.dag"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_text("")
    elif kind == "latin1":
        path.write_bytes("# café\n".encode("latin-1"))
    for command in (["check", str(path)], ["lower", str(path)], ["lower", str(path), "--emit=ast"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith(f"{path}")
        assert "Traceback" not in result.output


def test_werror_fails_on_a_warning() -> None:
    result = runner.invoke(app, ["check", "--werror", str(MA)])
    assert result.exit_code == 2
    assert result.stdout == ""
    expected = MA_WARNING.replace("warning:", "error:") + " [--werror]"
    assert expected in result.stderr.splitlines()
    lowered = runner.invoke(app, ["lower", str(MA), "--werror"])
    assert lowered.exit_code == 2
    assert lowered.stdout == ""


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert result.stdout == f"dagc {project['version']}\n"
    assert dagc.__version__ == project["version"]


def test_lower_emit_ir() -> None:
    result = runner.invoke(app, ["lower", str(BASELINE), "--emit", "ir"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("program @dense_4l {\n")
    assert result.stdout.endswith("\n}\n")
    default = runner.invoke(app, ["lower", str(BASELINE)])
    assert default.stdout == result.stdout


def test_lower_prints_warnings_on_stderr_only() -> None:
    result = runner.invoke(app, ["lower", str(MA)])
    assert result.exit_code == 0
    assert result.stdout.startswith("program @moe_4l {\n")
    assert "warning" not in result.stdout
    assert MA_WARNING in result.stderr.splitlines()


def test_lower_emit_ast() -> None:
    result = runner.invoke(app, ["lower", str(BASELINE), "--emit=ast"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "File"
    assert "      name: 'dense_4l' @2:7" in lines  # `model dense_4l {` is line 2


def test_help_of_every_command() -> None:
    commands = sorted(get_command(app).commands)  # type: ignore[attr-defined]
    assert {"check", "lower"} <= set(commands)
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for name in commands:
        assert name in top.stdout
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.stdout
        assert runner.invoke(app, [name, "-h"]).stdout == result.stdout


def test_no_arguments_prints_help() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 2  # no command given is a usage error
    assert "Usage:" in result.stdout
    assert result.stderr == ""


# -- usage errors: plain `dagc: error:` text and a help line, exit 2 -------------------


def _usage_error(args: list[str]) -> str:
    """The stderr of a usage error, after checking its exit status and empty stdout."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "╭" not in result.stderr and "Traceback" not in result.stderr  # no rich box
    return result.stderr


def test_unknown_command() -> None:
    # Once "did you mean", not twice, and no box around it.
    assert _usage_error(["anlyze", str(BASELINE)]) == (
        "dagc: error: unknown command `anlyze`\n     = help: did you mean `analyze`?\n"
    )


def test_unknown_command_far_from_every_command() -> None:
    assert _usage_error(["frob"]) == (
        "dagc: error: unknown command `frob`\n"
        "     = help: the commands are `analyze`, `check`, `compare`, `formula`, `lower`,"
        " `new`, `profile`, `render`, `search` or `timeline`; `dagc -h` describes them\n"
    )


@pytest.mark.parametrize(
    ("option", "help"),
    [
        ("--werorr", "did you mean `--werror`?"),
        ("--bogus", "`dagc check -h` describes its options"),
    ],
)
def test_unknown_option(option: str, help: str) -> None:
    assert _usage_error(["check", option, str(BASELINE)]) == (
        f"dagc: error: unknown option `{option}` for `dagc check`\n     = help: {help}\n"
    )


def test_missing_argument() -> None:
    assert _usage_error(["check"]) == (
        "dagc: error: `dagc check` needs the argument `FILES...`\n"
        "     = help: usage: dagc check [OPTIONS] FILES... (`dagc check -h` for more)\n"
    )


def test_missing_option_value() -> None:
    assert _usage_error(["lower", str(BASELINE), "--emit"]) == (
        "dagc: error: option `--emit` requires an argument\n"
        "     = help: write its value after it: `--emit VALUE`\n"
    )


def test_bad_option_value() -> None:
    assert _usage_error(["lower", str(BASELINE), "--emit", "dot"]) == (
        "dagc: error: invalid value for `--emit`: `dot` is not one of `ast`, `ir`, `steps`,"
        " `device`, `json`, `dag`\n     = help: `dagc lower -h` describes its options\n"
    )


def test_extra_argument() -> None:
    assert _usage_error(["lower", str(BASELINE), "b", "c"]) == (
        "dagc: error: unexpected extra arguments `b`, `c`\n"
        "     = help: usage: dagc lower [OPTIONS] FILE (`dagc lower -h` for more)\n"
    )


def test_analyse_is_an_alias_of_analyze() -> None:
    british = runner.invoke(app, ["analyse", str(BASELINE), "--format", "json"])
    american = runner.invoke(app, ["analyze", str(BASELINE), "--format", "json"])
    assert british.exit_code == 0, british.stderr
    assert british.stdout == american.stdout
    assert british.stdout.startswith("{")
    listed = runner.invoke(app, ["--help"]).stdout
    # One entry per command: `analyse` is not listed beside `analyze`.
    assert re.findall(r"^│ (analy[sz]e) ", listed, re.MULTILINE) == ["analyze"]


def _explode(*args: object, **kwargs: object) -> object:
    raise RuntimeError("boom")


@pytest.mark.parametrize("command", [["check", str(BASELINE)], ["lower", str(BASELINE)]])
def test_internal_error(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setattr(dagc, "compile_file", _explode)
    monkeypatch.delenv("DAGC_DEBUG", raising=False)
    result = runner.invoke(app, command)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (  # one line: the error, then how to report it
        "dagc: internal error: RuntimeError: boom (a bug in dagc; rerun with DAGC_DEBUG=1 for"
        f" a traceback and report it at {ISSUES_URL})\n"
    )
    assert "Traceback" not in result.output


def test_internal_error_with_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dagc, "compile_file", _explode)
    result = runner.invoke(app, ["check", str(BASELINE)], env={"DAGC_DEBUG": "1"})
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: boom" in result.stderr


# -- the real program ------------------------------------------------------------------


def _dagc(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DAGC_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "dagc", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )


def test_python_m_dagc() -> None:
    seeds = sorted(str(path.relative_to(REPO)) for path in SEED.glob("*.dag"))
    good = _dagc("check", *seeds)
    assert good.returncode == 0, good.stderr
    assert good.stdout == ""
    assert good.stderr.endswith(", 0 with errors, 1 warning\n")

    lowered = _dagc("lower", "examples/seed/baseline_tp8_pp2.dag", "--emit", "ir")
    assert lowered.returncode == 0
    assert lowered.stdout.startswith("program @dense_4l {\n")


def test_python_m_dagc_usage_error() -> None:
    # The installed entry point takes the same path as the tests' runner: plain text, exit 2.
    bad = _dagc("anlyze", "examples/seed/baseline_tp8_pp2.dag")
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr == (
        "dagc: error: unknown command `anlyze`\n     = help: did you mean `analyze`?\n"
    )


def test_python_m_dagc_bad_input(tmp_path: Path) -> None:
    path = _bad_file(tmp_path)
    bad = _dagc("check", str(path))
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.startswith(f"{path}:3:3: error: unknown model key `hiden`\n")
    assert "Traceback" not in bad.stderr


# -- warnings and --werror: one rule for every command -----------------------------------

# Each expert gets 16 token slots for 8 tokens: a warning found only while expanding.
PADDED_MOE = (
    "model m { layers = 1; hidden = 32; heads = 4; experts = 8; top_k = 2; expert_ffn = 16;"
    " capacity_factor = 8 }\n"
    "workload { batch = 2; seq = 4; dtype = fp32 }\n"
    "devices { group a = gpu[0..3] }\n"
    "layers 0 on a { attention; moe }\n"
)
WERROR_LINE = "dagc: error: warnings are errors (--werror)"

# Every command that expands, with its output going to stdout or to OUT (a file).
EXPANDING_COMMANDS = [
    ["lower", "--emit", "device"],
    ["lower", "--emit", "json", "-o", "OUT.json"],
    ["lower", "--print-after", "order"],  # printouts stream to stdout while expanding
    ["lower", "--print-after", "place", "-o", "OUT.ir"],  # the IR is written before expanding
    ["lower", "--emit", "device", "--print-after", "all"],
    ["formula"],
    ["formula", "-o", "OUT.txt"],
    ["analyze"],
    ["analyze", "--render", "OUT.dot"],
    ["compare"],
    ["render", "-o", "OUT.dot"],
    ["timeline", "-o", "OUT.json"],
]


def _expanding(tmp_path: Path, command: list[str]) -> tuple[list[str], Path | None, str]:
    """The arguments for PADDED_MOE, the file OUT stands for, and the warning it prints."""
    from dagc.expand import expand

    path = tmp_path / "padded.dag"
    path.write_text(PADDED_MOE)
    (warning,) = expand(dagc.compile_file(path)).warnings
    out = next((tmp_path / arg.replace("OUT", "out") for arg in command if "OUT" in arg), None)
    args = [str(out) if "OUT" in arg else arg for arg in command]
    return [args[0], str(path), *args[1:]], out, warning.render()


@pytest.mark.parametrize("command", EXPANDING_COMMANDS, ids=" ".join)
def test_werror_stops_on_an_expansion_warning_before_any_output(
    tmp_path: Path, command: list[str]
) -> None:
    args, out, warning = _expanding(tmp_path, command)
    result = runner.invoke(app, [*args, "--werror"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"{warning}\n{WERROR_LINE}\n"
    assert list(tmp_path.iterdir()) == [tmp_path / "padded.dag"]  # no -o file, no picture
    assert out is None or not out.exists()


@pytest.mark.parametrize("command", EXPANDING_COMMANDS, ids=" ".join)
def test_an_expansion_warning_is_printed_once_by_every_command(
    tmp_path: Path, command: list[str]
) -> None:
    args, out, warning = _expanding(tmp_path, command)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count(warning) == 1
    assert WERROR_LINE not in result.stderr
    if out is None:
        assert result.stdout != ""
    else:
        assert out.exists()  # (--print-after printouts still go to stdout)


def test_werror_printouts_are_the_same_once_no_warning_stops_them(tmp_path: Path) -> None:
    # Under --werror the --print-after printouts wait for the expansion's warnings; with
    # none, stdout is byte for byte what it is without --werror.
    for emit in ("ir", "steps", "device"):
        args = ["lower", str(BASELINE), "--emit", emit, "--print-after", "place"]
        args += ["--print-after", "order"]
        plain = runner.invoke(app, args)
        strict = runner.invoke(app, [*args, "--werror"])
        assert plain.exit_code == strict.exit_code == 0, strict.stderr
        assert "// ----- IR after place -----" in plain.stdout
        assert strict.stdout == plain.stdout
        assert strict.stderr == plain.stderr == ""


@pytest.mark.parametrize(
    ("option", "message", "help"),
    [
        (
            ["--print-after", "place"],
            "--print-after does nothing with --emit ast",
            "no pass runs before the syntax tree is printed; use --emit ir, steps, device or json",
        ),
        (
            ["--werror"],
            "--werror does nothing with --emit ast",
            "the syntax tree is printed before the checks that warn; `dagc check --werror`"
            " runs them",
        ),
    ],
    ids=["print-after", "werror"],
)
def test_lower_emit_ast_refuses_options_it_would_ignore(
    option: list[str], message: str, help: str
) -> None:
    assert _usage_error(["lower", str(BASELINE), "--emit", "ast", *option]) == (
        f"dagc: error: {message}\n     = help: {help}\n"
    )


@pytest.mark.parametrize("command", [["analyze"], ["render", "-o", "PICTURE"]], ids=lambda c: c[0])
def test_a_bad_picture_name_fails_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: list[str]
) -> None:
    # analyze --render checked the picture's name after printing the report; both commands
    # now check it before compiling, so that a broken file is not even read.
    monkeypatch.setattr(dagc, "compile_file", _explode)
    report = tmp_path / "report.txt"
    picture = tmp_path / "picture.txt"
    args = [command[0], str(BASELINE), *command[1:]]
    if command[0] == "analyze":
        args += ["--render", str(picture), "-o", str(report)]
    else:
        args[-1] = str(picture)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"dagc: error: cannot tell the output format of `{picture}`: unknown extension `.txt`\n"
    )
    assert list(tmp_path.iterdir()) == []
