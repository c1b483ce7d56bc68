"""The synthetic bank: realistic landing data for every source, with the hidden truth beside it.

``generate()`` writes ``<out>/landing/<source>/...`` (what the pipeline ingests) and
``<out>/truth/...`` (what only tests, benchmarks and evaluation read). ``closed_loop`` answers a
policy's decisions with the responses the known model implies and scores policies exactly.
See ``pipelines/sources/README.md`` for the files and their columns.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pipelines.errors import InputError

from .actions import ACTION_IDS, ACTIONS, COMPLAINT_COST, Action
from .config import FaultRates, SimConfig
from .engine import RunStats, Simulation
from .personas import PERSONAS
from .truth import TruthWriter
from .writers import FileWriter, MemoryWriter, Writer

__all__ = [
    "ACTIONS",
    "ACTION_IDS",
    "COMPLAINT_COST",
    "PERSONAS",
    "Action",
    "FaultRates",
    "FileWriter",
    "MemoryWriter",
    "RunStats",
    "SimConfig",
    "Writer",
    "generate",
    "prepare_output",
]
OUTPUT_PARTS = ("landing", "truth")


def prepare_output(out: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Check the output folder is usable; with ``overwrite`` clear what an earlier run wrote."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} is a file, not a folder")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise InputError(
                f"--out {path} is not empty; pass --overwrite to replace its landing/ and truth/"
            )
        for part in OUTPUT_PARTS:
            if (path / part).is_dir():
                shutil.rmtree(path / part)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".journeylake-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {path} is not writable: {exc.strerror or exc}") from None
    return path


def generate(
    config: SimConfig,
    out: str | os.PathLike[str],
    *,
    writer: Writer | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RunStats:
    """Simulate ``config`` and write landing files (through ``writer``) and truth under ``out``."""
    path = prepare_output(out, overwrite=overwrite)
    truth = TruthWriter(path)
    sim = Simulation(config, writer or FileWriter(path), truth)
    stats = sim.run(progress)
    truth.write_json("manifest", _manifest(config, stats, sim))
    truth.close()
    return stats


def _manifest(config: SimConfig, stats: RunStats, sim: Simulation) -> dict:
    from dataclasses import asdict

    from pipelines.contracts import SCHEMA_DRIFT_FIELD
    from pipelines.sources import banking77

    from .codec import iso_date, iso_timestamp
    from .texts import corpus

    drift = config.drift_ms
    return {
        "generator": "journeylake simulator",
        "customers": config.customers,
        "days": config.days,
        "seed": config.seed,
        "start": config.start.isoformat(),
        "end": iso_date(config.start_day + config.days - 1),
        "faults": asdict(config.faults),
        "schema_drift": {
            "field": SCHEMA_DRIFT_FIELD,
            "source": "digital",
            "from": iso_timestamp(drift) if drift is not None else None,
        },
        "label_window": {
            "start": iso_date(config.start_day + sim.window[0]),
            "end": iso_date(config.start_day + sim.window[1] - 1),
        },
        "lines": dict(sorted(stats.lines.items())),
        "files": dict(sorted(stats.files.items())),
        "utterances": {
            "corpus": "BANKING77, training split (pipelines/sources/banking77)",
            "queries_said": len(
                corpus().texts
            ),  # the part kept for training, minus any holding a held-out one
            "queries_held_out": len(banking77.split()[1]),  # never said
            "topic_error_rate": config.topic_error_rate,
        },
        "actions": {a.action_id: a.value for a in ACTIONS.values()},
        "complaint_cost": COMPLAINT_COST,
    }
