"""Data-quality settings: the ``quality`` section of ``conf/base.yml``.

``pipelines.config.Config`` composes :class:`QualityConfig` as ``cfg.quality``. The suites
themselves are Great Expectations files (``conf/gx/expectations/``); this section says where
they are, where results go and which commands a failed validation stops.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from pipelines.config_section import ConfigSection

# Commands a failed validation can stop (``--force`` runs them anyway, and is recorded)
GatedCommand = Literal["export-segments", "train", "score"]
SUITE_NAME = re.compile(r"^(silver|gold)\.[a-z][a-z0-9_]*$")


class QualityConfig(ConfigSection):
    # Great Expectations suites, one file per table (<layer>.<table>.json), relative to conf/
    suites: Path = Path("gx/expectations")
    results_table: str = Field("dq_results", pattern=r"^[a-z][a-z0-9_]*$")  # in gold
    overrides_table: str = Field("dq_overrides", pattern=r"^[a-z][a-z0-9_]*$")  # --force, in gold
    # command -> the suites (tables) whose last validation must not have failed a critical
    # expectation before the command runs
    gates: dict[GatedCommand, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("gates")
    @classmethod
    def _suite_names(cls, gates: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for command, suites in gates.items():
            for suite in suites:
                if not SUITE_NAME.match(suite):
                    raise ValueError(f"{command}: {suite!r} is not a suite name (<silver|gold>.<table>)")
        return gates
