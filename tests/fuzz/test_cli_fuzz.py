"""Every verb on an empty home, before its prerequisites, and with arguments drawn at random:
an exit code and one line that names what is wrong, never a trace.

The verbs run as a user runs them (``python -m pipelines.cli``, a process each) on a home of their
own with nothing in it. Verbs that start long-running things (``demo``, ``generate``'s bank,
``up``/``start`` of a service) are left to their own tests.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.cli import build_parser

LONG = os.environ.get("JOURNEYLAKE_FUZZ") == "long"
TIMEOUT_S = 120


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYLAKE_")}
    env.update(JOURNEYLAKE_HOME=str(home), PYSPARK_PYTHON=sys.executable)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


# what the JVM itself prints when a verb starts Spark (Spark 4 adds the vector module), not ours
JVM_NOTICES = ("WARNING: Using incubator modules",)


def assert_one_line_error(result: subprocess.CompletedProcess[str], verb: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(JVM_NOTICES)]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode != 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert lines, f"exit {result.returncode} without a message"
    # argparse prints its usage above the error line; our own errors are the one line
    last = lines[-1]
    assert last.startswith(f"journeylake {verb}: error: ") or last.startswith("journeylake: error: "), lines
    if not lines[0].startswith("usage:"):
        assert len(lines) == 1, lines


# (arguments, exit code) of every verb on a home with nothing in it: what is missing is named
EMPTY_HOME = {
    "ingest": (["ingest", "--until-idle"], 1),
    "dbt": (["dbt", "build"], 1),
    "train": (["train"], 1),
    "score": (["score"], 1),
    "decide": (["decide", "--until-idle"], 1),
    "explain-decision": (["explain-decision", "d-123"], 1),
    "evaluate-policy": (["evaluate-policy"], 1),
    "export-segments": (["export-segments"], 1),
    "online-store sync": (["online-store", "sync"], 1),
    "serve": (["serve"], 1),  # no bearer token configured
    "erase-customer": (["erase-customer", "C00000001"], 1),
}


@pytest.mark.parametrize("case", sorted(EMPTY_HOME))
def test_every_verb_on_an_empty_home_says_what_to_run_first_in_one_line(tmp_path: Path, case: str) -> None:
    args, code = EMPTY_HOME[case]
    result = run_cli(tmp_path / "home", *args)
    assert_one_line_error(result, args[0])
    assert result.returncode == code


def test_status_verbs_on_an_empty_home_say_stopped_without_an_error(tmp_path: Path) -> None:
    for args in (["metastore", "status"], ["kafka", "status"], ["online-store", "status"]):
        result = run_cli(tmp_path / "home", *args)
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert "stopped" in result.stdout and not result.stderr.strip(), (args, result.stdout, result.stderr)


def test_doctor_on_an_empty_home_names_what_does_not_exist_yet(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "home", "doctor")
    assert result.returncode == 0, result.stderr
    assert "does not exist yet" in result.stdout and "to fix" in result.stdout


# -------------------------------------------------------------------- arguments drawn at random

SKIPPED_VERBS = {"demo", "sql"}  # the demo runs everything; sql's Spark start is tested in tests/cli
SAFE_CHOICES = {"up": "status", "start": "status"}  # never start a service from a fuzzed command


def options() -> dict[str, list[argparse.Action]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        verb: [a for a in p._actions if not isinstance(a, argparse._HelpAction)]
        for verb, p in sub.choices.items()
        if verb not in SKIPPED_VERBS
    }


VERB_OPTIONS = options()
junk = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["-1", "0", "1e309", "nan", "2026-13-45", "../..", "/nonexistent/x", "", " ", "—"]),
)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    verb = draw(st.sampled_from(sorted(VERB_OPTIONS)), label="verb")
    args = [verb]
    for action in VERB_OPTIONS[verb]:
        if not action.option_strings:  # a positional: a valid choice (never up/start) or junk
            if action.choices:
                choice = draw(st.sampled_from(sorted(action.choices)))
                args.append(SAFE_CHOICES.get(choice, choice))
            else:
                args.append(draw(junk))
    chosen = draw(
        st.lists(st.sampled_from([a for a in VERB_OPTIONS[verb] if a.option_strings] or [None]), max_size=3)
    )
    for action in chosen:
        if action is None:
            continue
        args.append(action.option_strings[-1])
        if action.nargs != 0:
            args.append(draw(junk))
    if verb == "generate":
        args.extend(["--customers", "-1"])  # never write a whole bank: the argument check must refuse
    if draw(st.booleans(), label="unknown option"):
        args.append("--no-such-option")
    return args


@settings(max_examples=300 if LONG else 12)
@given(args=command_lines())
def test_random_arguments_get_an_exit_code_and_one_line_never_a_trace(
    tmp_path_factory: pytest.TempPathFactory, args: list[str]
) -> None:
    home = tmp_path_factory.mktemp("home")
    try:
        result = run_cli(home, *args)
    finally:
        from pipelines.services import metastore

        metastore.stop_servers_under(home)  # a verb that got as far as the catalog started one
    assert "Traceback" not in result.stderr, (args, result.stderr[-3000:])
    if result.returncode not in (0, 3):  # 3: a status verb saying "stopped"
        assert_one_line_error(result, args[0])
