"""`journeylake kafka up|down|status`: the local single-node Kafka broker (loopback only)."""

from __future__ import annotations

import argparse
import sys

from pipelines.config import Config, add_config_arguments, config_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("up", "down", "status"),
        help="start the broker (no-op if running), stop the one this home started, or show its state",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the broker to accept clients (up, default 120) or to shut down "
        "cleanly before it is killed (down, default 30)",
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.services import kafka_broker

    cfg = config_from_args(args)
    if args.action == "up":
        state, started = kafka_broker.up(cfg, timeout=args.timeout or kafka_broker.START_TIMEOUT_S)
        if started:
            print(
                f"kafka: started, bootstrap {state.bootstrap} (pid {state.pid}); "
                f"data {state.data}; log {state.log}"
            )
        else:
            print(f"kafka: already running: {state.describe()}")
        _mention_clients(cfg, state.bootstrap)
        return 0
    if args.action == "down":
        how = kafka_broker.down(cfg, timeout=args.timeout or kafka_broker.STOP_TIMEOUT_S)
        print(
            f"kafka: {how}"
            if how
            else "kafka: not running (no broker started from this home); nothing to stop"
        )
        return 0
    state = kafka_broker.status(cfg)
    print(f"kafka: {state.describe()}")
    _mention_clients(cfg, state.bootstrap)
    return 0 if state.running else 3


def _mention_clients(cfg: Config, local: str) -> None:
    """Say so when clients are configured for another cluster than this local broker."""
    if cfg.kafka.bootstrap_servers != local:
        print(
            f"kafka: note: clients use kafka.bootstrap_servers {cfg.kafka.bootstrap_servers}, not this broker"
        )


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import main as cli_main

    return cli_main(["kafka", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
