"""The `journeylake` command: one verb per thing people do.

Each verb lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``, and
``locks(args)`` when it is a job that must not run twice on one home (the kinds it holds).
Modules import heavy libraries (pyspark, mlflow) inside ``run`` so that ``--help`` and
``generate`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pipelines import __version__
from pipelines.errors import JourneylakeError, root_cause

# verb -> (module, one-line help). Order is the order shown in --help.
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("pipelines.cli.demo", "run the main job end to end on generated data and show the results"),
    "generate": ("pipelines.cli.generate", "write a synthetic bank's landing files and hidden truth"),
    "ingest": ("pipelines.cli.ingest", "stream landing files into bronze / silver / gold Delta tables"),
    "dbt": ("pipelines.cli.dbt", "build, run or test the dbt models (unified customer, journeys, funnels)"),
    "validate": (
        "pipelines.cli.validate",
        "run the Great Expectations suites on silver and gold; results, Data Docs and gates",
    ),
    "train": (
        "pipelines.cli.train",
        "train segmentation, propensity, churn and text models; register champions in MLflow",
    ),
    "score": ("pipelines.cli.score", "score every customer with the champion models, with reason codes"),
    "classify-text": (
        "pipelines.cli.classify_text",
        "score a CSV file of texts with the champion text model: intent, confidence, sentiment",
    ),
    "decide": ("pipelines.cli.decide", "stream next-best-action decisions into gold.next_best_actions"),
    "online-store": (
        "pipelines.cli.online_store",
        "start, sync, check or stop the online store the decision API reads",
    ),
    "serve": ("pipelines.cli.serve", "run the decision API channels call at the moment of interaction"),
    "explain-decision": ("pipelines.cli.explain_decision", "show why a decision chose what it chose"),
    "evaluate-policy": (
        "pipelines.cli.evaluate_policy",
        "estimate the value of the current and alternative policies (IPS, SNIPS, DR) and the A/B uplift",
    ),
    "export-segments": (
        "pipelines.cli.export_segments",
        "write dated, consent-filtered segment files for marketing",
    ),
    "erase-customer": (
        "pipelines.cli.erase_customer",
        "erase a person everywhere: tables and their history, files, the online store (GDPR Art. 17)",
    ),
    "sql": ("pipelines.cli.sql", "run a SQL query against the shared catalog"),
    "sql-user": ("pipelines.cli.sql_user", "add, remove or list the users of the SQL endpoint"),
    "doctor": (
        "pipelines.cli.doctor",
        "check a home: services, running jobs, last runs, landing, disk, tables",
    ),
    "metastore": ("pipelines.cli.metastore", "start, stop or check the shared metastore service"),
    "kafka": ("pipelines.cli.kafka", "start, stop or check the local Kafka broker"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="journeylake",
        description="Real-time customer-journey optimization lakehouse for retail banks.",
    )
    parser.add_argument("--version", action="version", version=f"journeylake {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module_name, help_text) in VERBS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # verb not built yet in this checkout
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        module.configure(verb_parser)
        verb_parser.set_defaults(_run=module.run, _locks=getattr(module, "locks", None))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with job_locks(args):
            return int(args._run(args) or 0)
    except JourneylakeError as exc:
        trace = f" (full trace: {write_trace(args)})" if exc.__cause__ is not None else ""
        print(f"journeylake {args.verb}: error: {_one_line(str(exc))}{trace}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"journeylake {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; the trace goes to the home's log
        print(
            f"journeylake {args.verb}: error: {_one_line(root_cause(exc))}{low_disk(args)} "
            f"(full trace: {write_trace(args)})",
            file=sys.stderr,
        )
        return 1


LOW_DISK_BYTES = 200 * 1024 * 1024


def low_disk(args: argparse.Namespace) -> str:
    """ "; the disk holding <home> has N MB free" when it is nearly full (the likely cause of a
    failure whose own message, from deep in Spark or the catalog, does not say so)."""
    import shutil

    try:
        from pipelines.config import config_from_args

        home = config_from_args(args).paths.home
        free = shutil.disk_usage(home).free
    except Exception:  # no home to look at: nothing to add
        return ""
    return f"; the disk holding {home} has {free // 2**20} MB free" if free < LOW_DISK_BYTES else ""


@contextmanager
def job_locks(args: argparse.Namespace) -> Iterator[None]:
    """The home's locks the verb's ``locks(args)`` names (pipelines/services/job_lock.py)."""
    kinds = args._locks(args) if getattr(args, "_locks", None) else ()
    if not kinds:
        yield
        return
    from pipelines.config import config_from_args
    from pipelines.services.job_lock import job_lock

    with job_lock(config_from_args(args), *kinds):
        yield


def write_trace(args: argparse.Namespace) -> str:
    """Append the failure being handled, with its trace, to the home's ``logs/journeylake.log``
    (the temporary folder's when the home cannot be known or written, e.g. its disk is full);
    where it went, as the one-line report names it."""
    import tempfile
    import traceback

    folders = [Path(tempfile.gettempdir())]
    try:
        from pipelines.config import config_from_args

        folders.insert(0, config_from_args(args).paths.logs)
    except Exception:  # a broken config is itself the error being reported
        pass
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = f"--- {stamp} pid {os.getpid()} journeylake {' '.join(sys.argv[1:])}\n{traceback.format_exc()}"
    for folder in folders:
        path = folder / "journeylake.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with path.open("a") as handle:
                handle.write(text)
            return str(path)
        except OSError:
            continue
    return "not written: no log folder is writable"


if __name__ == "__main__":
    sys.exit(main())


def _one_line(message: str) -> str:
    """A message as one line: a control character a user typed (a path or a target with a
    newline in it) is shown escaped, not obeyed."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)
