"""`journeylake metastore start|stop|status`: the shared catalog's local server."""

from __future__ import annotations

import argparse
import sys

from pipelines.config import add_config_arguments, config_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("start", "stop", "status"),
        help="start the server (no-op if running), stop the one this home started, or show its state",
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.services import metastore

    cfg = config_from_args(args)
    if args.action == "start":
        state = metastore.ensure_running(cfg)
        print(f"metastore: {state.describe()}")
        return 0
    if args.action == "stop":
        stopped = metastore.stop(cfg)
        print("metastore: stopped" if stopped else "metastore: no server started from this home is running")
        return 0
    state = metastore.status(cfg)
    print(f"metastore: {state.describe()}")
    return 0 if state.running or state.kind != "derby-server" else 3


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import main as cli_main

    return cli_main(["metastore", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
