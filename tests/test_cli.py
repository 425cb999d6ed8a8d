"""The command line: help text, and bad input or usage as one line with exit status 2 (cli.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from iovatrace.cli import cli


def _one_line_error(res, status: int = 2) -> str:
    assert res.exit_code == status, res.output
    assert "Traceback" not in res.output and res.stderr.count("\n") == 1 and res.stdout == ""
    return res.stderr


@pytest.mark.parametrize("args", [["info"], ["convert", "-o"], ["kmemleak"], ["leaks"], ["chart", "-o"]])
def test_non_input_is_unusable(tmp_path, args) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("just some words\n")
    err = _one_line_error(CliRunner().invoke(cli, [*args, *([str(tmp_path / "o")] if args[-1] == "-o" else []),
                                                   str(bad)]))
    assert err.startswith("iovatrace: error: ") and "notes.txt" in err


def test_empty_log_and_missing_file_are_one_line(tmp_path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert "Empty kernel log" in _one_line_error(CliRunner().invoke(cli, ["oops", str(empty)]))
    err = _one_line_error(CliRunner().invoke(cli, ["replay", str(tmp_path / "missing.dat")], prog_name="iovatrace"))
    assert err.startswith("iovatrace replay: error: ") and "does not exist" in err and "--help" in err
    err = _one_line_error(CliRunner().invoke(cli, ["info", "--no-such-option", str(empty)]))
    assert "No such option" in err


def test_every_command_has_help() -> None:
    top = CliRunner().invoke(cli, ["--help"]).output
    for name, cmd in cli.commands.items():
        assert name in top
        res = CliRunner().invoke(cli, [name, "--help"])
        assert res.exit_code == 0 and cmd.help
        if cmd.callback.__module__ != "iovatrace.cli":
            continue  # the tracer's commands are registered from tracer/ and checked there
        assert "..." not in cmd.get_short_help_str(limit=66)  # 80 columns less the longest name and margins
        for p in cmd.params:  # every option says what it does
            assert getattr(p, "help", None) or p.param_type_name == "argument" or p.name == "help", (name, p.name)


def test_replay_console_script_names_itself() -> None:
    code = "import sys; sys.argv[0] = 'replay'; from iovatrace.cli import replay_main; replay_main()"
    out = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("Usage: replay [OPTIONS] [TRACE]")
    bad = subprocess.run([sys.executable, "-c", code, "no/such/trace.dat"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("replay: error:")
