"""The demo's epilogue: one customer asks to be forgotten, and the bytes show it.

Part of ``journeylake demo`` (not a verb of its own): a customer whose email, phone and name no
one else's record holds is picked from what the core-banking source delivered, asked for by their
online-banking login (the identity map finds the rest), erased with ``journeylake
erase-customer``'s code, and every file under the home is scanned for their PII before and after.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pyspark.sql import SparkSession

from pipelines.config import Config


def run_erasure(
    spark: SparkSession, cfg: Config, step: Callable[[str], None], show: Callable[[str], None]
) -> bool:
    """Erase one customer and scan the home; whether the scan found nothing of them."""
    from pipelines.cli.erase_customer import show as show_record
    from pipelines.privacy.erasure import erase
    from pipelines.privacy.scan import landed_people, person_patterns, scan, unshared

    candidates = unshared(*landed_people(cfg.paths.landing))
    if not candidates:
        step("erasure: no customer with PII of their own to erase in this bank")
        return True
    person = candidates[len(candidates) // 2]
    patterns = person_patterns(person)
    home = cfg.paths.home
    skip = [home / "truth"]  # the simulator's answer key: a bank has no such folder
    before, _ = scan(home, patterns, skip)
    holding = len({h.path for h in before})
    step(
        f"erasure: customer {person['customer_number']} asks to be forgotten (asked by login "
        f"{person['login_id']}); their email, phone, name or number is in {holding} file(s)"
    )
    started = time.monotonic()
    outcome = erase(spark, cfg, [person["login_id"]], "demo", progress=lambda _line: None)[-1]
    seconds = time.monotonic() - started
    show(show_record(outcome))
    after, files = scan(home, patterns, skip)
    step(
        f"erasure took {seconds:.1f} s; byte scan of {files:,} files under {home} (data files "
        f"decompressed, {skip[0].name}/ left out): {len(after)} hit(s)"
    )
    for hit in after[:10]:
        show(f"  {hit.label} in {hit.path.relative_to(home)} ({hit.where})")
    return not after
