"""``journeylake dbt build|run|test|docs|...``: the dbt project on the pipeline's own catalog
(:mod:`pipelines.services.dbt_runner` runs it)."""

from __future__ import annotations

import argparse

from pipelines.config import add_config_arguments, config_from_args

COMMANDS = ("build", "run", "test", "docs", "compile", "source", "ls", "parse", "debug", "show")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", choices=COMMANDS, help="the dbt command to run")
    parser.add_argument(
        "dbt_args",
        nargs=argparse.REMAINDER,
        help="passed to dbt as is, e.g. `--select customer_360+` or `generate` after docs",
    )
    add_config_arguments(parser)


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    return ("dbt",)


def run(args: argparse.Namespace) -> int:
    from pipelines.services.dbt_runner import run_dbt

    cfg = config_from_args(args)
    run_dbt(cfg, [args.command, *args.dbt_args])
    return 0
