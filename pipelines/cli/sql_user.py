"""``journeylake sql-user add|role|remove|list [NAME] [--role R]``: who may log in to the SQL
endpoint, and with which of ``sql_endpoint.roles``.

``add`` reads the password from standard input (one line; ``--password-env VAR`` reads it from
an environment variable instead), never from the command line, where other users of the machine
could see it. ``role NAME --role R`` changes a user's role. A running endpoint takes a password
change at the next login and a role change at the next statement.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipelines.config import add_config_arguments, config_from_args
from pipelines.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("add", "role", "remove", "list"))
    parser.add_argument("name", nargs="?", help="the user (add, role, remove)")
    parser.add_argument(
        "--role", help="add, role: one of sql_endpoint.roles (add's default: sql_endpoint.default_role)"
    )
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
            "\n".join(f"{name}\t{user.role}" for name, user in users.items())
            if users
            else f"no users yet (the endpoint's first start adds {cfg.sql_endpoint.default_user})"
        )
        return 0
    if not args.name:
        raise InputError(f"sql-user {args.action}: name the user")
    if args.action == "role":
        if not args.role:
            raise InputError("sql-user role: give the new role with --role")
        sql_users.set_role(cfg, args.name, args.role)
        print(f"{args.name} now has role {args.role}")
        return 0
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
    if args.role:
        sql_users.check_role(cfg, args.role)
    new = sql_users.set_user(cfg, args.name, password, args.role)
    role = sql_users.read_users(cfg)[args.name].role
    print(
        f"{'added' if new else 'changed the password of'} {args.name} ({role}) in {sql_users.users_file(cfg)}"
    )
    return 0
