"""Help that explains (every command, flag and positional), --version, --debug, closed pipes, and
a settings reference in the docs that is the one generated from the declarations."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers._specs import RSKY_NAMES, specs
from workers.cli import WORKER_COMMANDS, build_parser, main
from workers.settings import reference, rsky_table

PROJECT = Path(__file__).resolve().parents[2]


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every subcommand's parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from parsers(sub)


def test_every_command_flag_and_positional_is_explained() -> None:
    envs: dict[str, set[str]] = {}  # flag -> the variables it stands for (--mode is two workers')
    for spec in specs():
        for s in spec.settings:
            if s.flag_name:
                envs.setdefault(s.flag_name, set()).add(s.env)
    seen = 0
    for parser in parsers(build_parser()):
        assert parser.description, f"{parser.prog} has no description"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            name = action.option_strings[0] if action.option_strings else action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"{parser.prog} {name} has no help"
            if name in envs and parser.prog != "streamfill devnet":  # a setting's flag: its variable, default
                assert any(f"env {env}" in action.help for env in envs[name]), action.help
                assert "; default " in action.help, action.help
                seen += 1
    assert seen > 60


def test_main_commands_have_examples_and_the_top_level_describes_streamfill(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ((), ("ingester",), ("backfiller",), ("indexer",), ("replayer",), ("demo",)):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and "COMMAND_MODULES" not in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("streamfill 0.")


def test_a_worker_command_parses_as_in_the_whole_parser_and_imports_no_other_command() -> None:
    whole = {p.prog: p.format_help() for p in parsers(build_parser())}
    for command in WORKER_COMMANDS:
        alone = [p for p in parsers(build_parser(command)) if p.prog != "streamfill"]
        assert [p.prog for p in alone] == [p for p in whole if p.split()[1:2] == [command]]
        for parser in alone:
            assert parser.format_help() == whole[parser.prog]
    probe = "import sys; from workers.cli import build_parser; build_parser('backfiller'); "
    probe += "print(sorted(m for m in ('devnet', 'workers.admin', 'workers.demo.cli') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=PROJECT
    )
    assert out.stdout.strip() == "[]"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFILL_")}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_debug_shows_the_traceback_of_an_edge_error() -> None:
    plain = cli("status", REDIS_URL="redis://127.0.0.1:1/0")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    for out in (
        cli("--debug", "status", REDIS_URL="redis://127.0.0.1:1/0"),
        cli("status", REDIS_URL="redis://127.0.0.1:1/0", STREAMFILL_DEBUG="1"),
    ):
        assert (
            out.returncode == 1
            and "Traceback" in out.stderr
            and "ServerError: cannot reach Redis" in out.stderr
        )


def test_a_closed_pipe_ends_a_command_quietly(redis_url: str, prefix: str) -> None:
    """`streamfill status --watch --json | head -1`: the reader goes away, the command ends."""
    env = {**os.environ, "REDIS_URL": redis_url, "STREAMFILL_PREFIX": prefix}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "status", "--watch", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith('{"at": ')
        proc.stdout.close()  # the next report is written into a closed pipe
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_config_show_gives_each_value_its_source() -> None:
    env = {"BACKFILLER_CONSUMER_GROUP": "prod_backfiller", "REDIS_URL": "redis://:hunter2@cache:6379/0"}
    out = cli("config", "show", "backfiller", **env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "BACKFILLER_GROUP=prod_backfiller  (env: BACKFILLER_CONSUMER_GROUP)" in lines
    assert "REDIS_URL=redis://:***@cache:6379/0  (env)" in lines
    assert "BACKFILLER_CONCURRENCY=8  (default)" in lines
    assert "hunter2" not in out.stdout


def test_the_docs_carry_the_generated_reference() -> None:
    """docs/operations.md embeds `streamfill config reference` (and `--rsky`): regenerate it there
    when a setting changes."""
    text = (PROJECT / "docs" / "operations.md").read_text()
    for generated in (reference(specs()), rsky_table(specs(), RSKY_NAMES)):
        assert generated.strip() in text, (
            "docs/operations.md is out of date: paste `streamfill config reference`"
        )


def test_the_demo_prints_one_progress_line_where_a_terminal_would_redraw() -> None:
    from workers.demo.progress import STREAMS, Snapshot, StreamRow, progress_line

    rows = {name: StreamRow(name, 5, 8, 3, 1, 0, 5) for name, _ in STREAMS}
    snap = Snapshot(0.0, rows, True, 1234, {"repos": 10, "live_records": 5000})
    line = progress_line(snap, [], started=0.0, phase="backfill")
    assert "\n" not in line and "\x1b" not in line
    assert "repos listed 8/10 (done), backfilled 4/10, records indexed 1,234/5,000, lag 12" in line
