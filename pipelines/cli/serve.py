"""``journeylake serve [--port P] [--workers N]``: the decision API (pipelines/serving/api.py).

It runs in the foreground (Ctrl-C or SIGTERM stops it after delivering what it holds); a
supervisor (systemd, a container platform) keeps it running in a deployment. Several workers are
several processes on one port, each with its own store connections: the store keeps them
consistent (a customer's reservations are checked against the store's version, not a process's).
"""

from __future__ import annotations

import argparse
import os

from pipelines.config import ENV_API_PORT, ENV_TARGET, add_config_arguments, config_from_args
from pipelines.errors import InputError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port (default: decisioning.api.port)")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: decisioning.api.workers)"
    )
    parser.add_argument(
        "--server", choices=("uvicorn", "granian"), default=None, help="default: decisioning.api.server"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug")
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.port is not None:
        if not 1 <= args.port <= 65535:
            raise InputError(f"--port {args.port}: expected 1-65535")
        os.environ[ENV_API_PORT] = str(args.port)  # the workers load the config from the environment
    if args.target:
        os.environ[ENV_TARGET] = args.target
    cfg = config_from_args(args)
    api = cfg.decisioning.api
    workers = args.workers if args.workers is not None else api.workers
    if workers < 1:
        raise InputError(f"--workers {workers}: expected 1 or more")
    from pipelines.serving.api import load_tokens

    load_tokens(cfg)  # no token, no start: say so before uvicorn starts
    where = "loopback only" if api.host in LOOPBACK else f"on {api.host} (not loopback: put it behind TLS)"
    server = args.server or api.server
    print(
        f"decision API: http://{api.host}:{api.port} ({workers} {server} worker(s), {where}); Ctrl-C stops it"
    )
    from pipelines.services import api_workers

    launch = api_workers.run_granian if server == "granian" else api_workers.run_uvicorn
    return launch(api.host, api.port, workers, args.log_level)
