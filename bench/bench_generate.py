"""Benchmark: how fast the simulator writes landing files (events per second on one core).

Runs ``generate`` into a temporary folder and prints lines written, wall time, CPU time, peak
memory and both rates. Arrow's thread pools are limited to one thread so the CPU-time rate
(process time, user + system) is the one-core figure; the wall-time rate also counts waiting for
the disk and for other processes on a shared machine.

    python bench/bench_generate.py [--customers 20000] [--days 30] [--seed 42] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.sources.simulator import SimConfig, generate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", help="output folder (default: a temporary folder, removed afterwards)")
    args = parser.parse_args(argv)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="jl-bench-")) / "bank"
    config = SimConfig(customers=args.customers, days=args.days, seed=args.seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    stats = generate(config, out, overwrite=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if not args.out:
        shutil.rmtree(out.parent, ignore_errors=True)
    lines = stats.total_lines
    stream = sum(
        v for k, v in stats.lines.items() if k not in ("customers", "accounts", "crm_contacts", "bureau")
    )
    print(f"customers={args.customers} days={args.days} seed={args.seed}")
    print(f"lines written: {lines:,} ({stream:,} stream events, {lines - stream:,} snapshot records)")
    print(f"wall time: {wall:.1f} s   CPU time: {cpu:.1f} s (setup, truth and files included)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    print(f"events/s (one core, CPU time): {lines / cpu:,.0f}")
    print(f"events/s (wall time):          {lines / wall:,.0f}")
    print(f"peak memory (max RSS): {peak_mb:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
