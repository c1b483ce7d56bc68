"""The `journeylake` command: one verb per thing people do.

Each verb lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``.
Modules import heavy libraries (pyspark, mlflow) inside ``run`` so that ``--help`` and
``generate`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pipelines import __version__
from pipelines.errors import JourneylakeError

# verb -> (module, one-line help). Order is the order shown in --help.
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("pipelines.cli.demo", "run the main job end to end on generated data and show the results"),
    "generate": ("pipelines.cli.generate", "write a synthetic bank's landing files and hidden truth"),
    "ingest": ("pipelines.cli.ingest", "stream landing files into bronze / silver / gold Delta tables"),
    "dbt": ("pipelines.cli.dbt", "build, run or test the dbt models (unified customer, journeys, funnels)"),
    "train": (
        "pipelines.cli.train",
        "train segmentation, propensity and churn models; register champions in MLflow",
    ),
    "score": ("pipelines.cli.score", "score every customer with the champion models, with reason codes"),
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
    "sql": ("pipelines.cli.sql", "run a SQL query against the shared catalog"),
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
        verb_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except JourneylakeError as exc:
        print(f"journeylake {args.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"journeylake {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
