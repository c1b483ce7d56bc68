"""``journeylake erase-customer ID... [--requests FILE]``: erase people everywhere (GDPR Art. 17).

Any known id (core-banking number, login, device, cookie, CRM contact, unified id) names the
person; every id of theirs is erased from every table and its history, the files around the
lakehouse and the online store (pipelines/privacy/erasure.py). It holds every job lock of the
home: no stream may write while rows and files go. It prints the erasure record, which names
nobody, and exits 1 when an asked id names nobody (after erasing the others).
"""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.config import add_config_arguments, config_from_args
from pipelines.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - Spark is imported when the command runs
    from pipelines.privacy.erasure import Erasure


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", metavar="ID", help="any id of a person to erase")
    parser.add_argument(
        "--requests", metavar="FILE", help="a file of ids to erase, one per line ('#' starts a comment)"
    )
    parser.add_argument(
        "--requested-by",
        default=None,
        help="who asked (recorded; default: the user running the command)",
    )
    add_config_arguments(parser)


def locks(args: argparse.Namespace) -> tuple[str, ...]:
    from pipelines.services.job_lock import JOB_KINDS

    return JOB_KINDS  # every job of the home, erasure included: nothing writes meanwhile


def requested_ids(args: argparse.Namespace) -> list[str]:
    ids = [i.strip() for i in args.ids if i.strip()]
    if args.requests:
        path = Path(args.requests)
        if not path.is_file():
            raise InputError(f"--requests {path}: no such file")
        for line in path.read_text().splitlines():
            value = line.split("#", 1)[0].strip()
            if value:
                ids.append(value)
    if not ids:
        raise InputError("no id to erase: give one or more ids, or --requests FILE")
    return list(dict.fromkeys(ids))


def run(args: argparse.Namespace) -> int:
    ids = requested_ids(args)
    cfg = config_from_args(args)
    from pipelines.privacy.erasure import erase, records_table
    from pipelines.services.spark import get_spark, require_lakehouse
    from pipelines.tables import Tables

    require_lakehouse(cfg, "there is nothing to erase before `journeylake ingest` has run")
    spark = get_spark(cfg, "journeylake-erase-customer")
    who = args.requested_by or os.environ.get("USER") or getpass.getuser()
    outcomes = erase(spark, cfg, ids, who, progress=lambda line: print(f"  {line}"))
    for erasure in outcomes:
        print(show(erasure))
    last = outcomes[-1]
    for asked, request in last.already.items():
        print(f"{asked}: already erased by request {request}")
    for asked in last.unknown:
        print(f"{asked}: no person is known by this id (nothing erased for it)")
    print(f"erasure records: {records_table(cfg, Tables.from_config(cfg))}")
    return 1 if last.unknown else 0


def show(erasure: Erasure) -> str:
    """The erasure record as the command prints it (the demo too)."""
    if not erasure.persons:
        return f"erasure {erasure.request_id}: nobody to erase"
    lines = [
        f"erasure {erasure.request_id}: {erasure.persons} person(s), requested by {erasure.requested_by}, "
        f"{(erasure.completed_at or 0) - erasure.requested_at:.1f} s",
        f"  rows removed: {sum(erasure.rows_removed.values()):,} in {len(erasure.rows_removed)} place(s)",
    ]
    lines += [f"    {name}: {rows:,}" for name, rows in sorted(erasure.rows_removed.items())]
    if erasure.files_rewritten:
        lines.append(
            "  files rewritten: " + ", ".join(f"{k} {v}" for k, v in sorted(erasure.files_rewritten.items()))
        )
    if erasure.store_keys_removed:
        lines.append(
            "  online store: " + ", ".join(f"{k} {v}" for k, v in sorted(erasure.store_keys_removed.items()))
        )
    lines.append(f"  ids recorded as keyed hashes: {len(erasure.id_hashes)}")
    lines += [f"  note: {n}" for n in erasure.notes]
    return "\n".join(lines)
