"""``journeylake sql-user add|remove|list [NAME]``: who may log in to the SQL endpoint.

``add`` reads the password from standard input (one line; ``--password-env VAR`` reads it from
an environment variable instead), never from the command line, where other users of the machine
could see it. A running endpoint takes the change at the next login.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipelines.config import add_config_arguments, config_from_args
from pipelines.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("add", "remove", "list"))
    parser.add_argument("name", nargs="?", help="the user (add, remove)")
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="add: read the password from this environment variable (default: one line of stdin)",
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.services import sql_users

    cfg = config_from_args(args)
    if args.action == "list":
        users = sql_users.read_users(cfg)
        print(
            "\n".join(users)
            if users
            else f"no users yet (the endpoint's first start adds {cfg.sql_endpoint.default_user})"
        )
        return 0
    if not args.name:
        raise InputError(f"sql-user {args.action}: name the user")
    if args.action == "remove":
        sql_users.remove_user(cfg, args.name)
        print(f"removed {args.name} from {sql_users.users_file(cfg)}")
        return 0
    if args.password_env:
        password = os.environ.get(args.password_env, "")
        if not password:
            raise InputError(f"--password-env {args.password_env}: that environment variable is not set")
    else:
        password = sys.stdin.readline().rstrip("\n")
    new = sql_users.set_user(cfg, args.name, password)
    print(f"{'added' if new else 'changed the password of'} {args.name} in {sql_users.users_file(cfg)}")
    return 0
