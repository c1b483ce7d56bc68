"""The base of every configuration section: strict (unknown keys are errors) and frozen.

It lives apart from :mod:`pipelines.config` so that a component's settings can sit beside the
component (``ml/settings.py``) and still be composed into ``pipelines.config.Config``: config
imports those sections, so they cannot import config.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigSection(BaseModel):
    """One section of ``conf/base.yml``: a misspelt key is an error, and a loaded value never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
