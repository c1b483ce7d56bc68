"""MLflow plumbing: where runs are tracked, how models are logged, and the ``@champion`` rule.

- Tracking defaults to a sqlite store under ``paths.mlflow`` (MLflow's file store does not hold
  a model registry); ``ml.tracking_uri`` points a team at a shared server instead.
- Models are logged as pyfunc models whose artifacts are our own files (LightGBM's text format,
  JSON, and ``.npz`` arrays read with ``allow_pickle=False``), so loading a model never unpickles
  anything.
- A new version gets the ``@champion`` alias only when it beats the current champion **on the
  same holdout rows**: the champion is re-scored on the new holdout rather than trusting a
  number it logged on other data. Everything downstream loads ``models:/<name>@champion``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel  # by name: to a type checker, mlflow.pyfunc is a lazy loader
from mlflow.tracking import MlflowClient

from pipelines.config import Config

CHAMPION = "champion"


def tracking_uri(cfg: Config) -> str:
    if cfg.ml.tracking_uri:
        return cfg.ml.tracking_uri
    folder = Path(cfg.paths.mlflow)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_location(cfg: Config) -> str | None:
    return None if cfg.ml.tracking_uri else (Path(cfg.paths.mlflow) / "artifacts").as_uri()


def configure(cfg: Config) -> MlflowClient:
    """Point MLflow at the configured store, quietly (its migrations log a page at INFO)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # the pyfunc wrapper object is cloudpickled by MLflow; the model itself is LightGBM text + JSON
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, uri)


def experiment(cfg: Config, family: str) -> str:
    """Create (once) and select the experiment of a model family, e.g. ``journeylake_propensity``."""
    name = f"{cfg.ml.model_prefix}_{family}"
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        mlflow.create_experiment(name, artifact_location=artifact_location(cfg))
    mlflow.set_experiment(name)
    return name


def model_name(cfg: Config, family: str, target: str | None = None) -> str:
    return f"{cfg.ml.model_prefix}_{family}" + (f"_{target}" if target else "")


def champion_uri(name: str) -> str:
    return f"models:/{name}@{CHAMPION}"


class SavedModel(PythonModel):
    """A pyfunc wrapper around one of our models saved with its own ``save(path)``.

    ``kind`` picks the loader (``propensity``, ``segmentation`` or ``text``); ``predict`` returns
    the calibrated probability, the segment id, or (text: from a frame with a ``text`` column)
    the ``intent``, ``intent_confidence`` and ``sentiment`` columns, so the model also works
    through MLflow's generic tools (``mlflow.pyfunc.spark_udf``, model serving).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.model: Any = None

    def load_context(self, context: Any) -> None:
        self.model = load_native(self.kind, Path(context.artifacts["model"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> Any:
        if self.kind == "text":
            return self.model.predict(model_input["text"].tolist())
        frame = model_input[self.model.feature_names].astype("float64")
        if self.kind == "propensity":
            return pd.Series(self.model.predict_proba(frame), name="probability")
        return pd.Series(self.model.predict(frame), name="segment_id")


def load_native(kind: str, path: Path) -> Any:
    if kind == "text":
        from ml.text import TextModel

        return TextModel.load(path)
    if kind == "propensity":
        from ml.propensity import PropensityModel

        return PropensityModel.load(path)
    from ml.segmentation import SegmentationModel

    return SegmentationModel.load(path)


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    champion: bool
    reason: str  # why it was (not) promoted, in words


# MLflow infers a logged model's pip requirements by loading it in a new Python process (seconds
# per model). Every model of a kind loads through the same SavedModel code, so the requirements
# inferred for a process's first model of a kind are given to the next ones: the same
# requirements.txt, one inference per kind instead of one per model.
_REQUIREMENTS: dict[str, list[str]] = {}


def log_model(model: Any, kind: str, example: pd.DataFrame) -> str:
    """Log ``model`` in the active run as a pyfunc model with signature and input example."""
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model.save(folder)
        example = model_input_example(model, kind, example)
        wrapper = SavedModel(kind)
        wrapper.model = model
        output = wrapper.predict(None, example)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SavedModel(kind),
            artifacts={"model": str(folder)},
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=_REQUIREMENTS.get(kind),  # None: inferred
        )
        if kind not in _REQUIREMENTS:
            _REQUIREMENTS[kind] = logged_requirements(info.model_uri, Path(tmp) / "logged")
    return info.model_uri


def model_input_example(model: Any, kind: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The first rows of ``frame`` as the logged model takes them: its features as floats, or
    for the text model its ``text`` column as strings."""
    if kind == "text":
        return frame[["text"]].astype(str).head(5)
    return frame[model.feature_names].astype("float64").head(5)


def logged_requirements(model_uri: str, folder: Path) -> list[str]:
    """The pip requirements a logged model was saved with (its requirements.txt), one per line;
    the model's files are downloaded into ``folder``."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(folder)))
    lines = (line.strip() for line in (local / "requirements.txt").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def current_champion(client: MlflowClient, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register(
    client: MlflowClient,
    name: str,
    model_uri: str,
    new_score: float,
    champion_score: Callable[[str], float] | None,
    metric: str,
    blocked: list[str] | None = None,
) -> Registered:
    """Register a version; give it ``@champion`` only if it is not blocked and beats the champion.

    ``champion_score(uri)`` re-scores the current champion on the new holdout. ``blocked`` holds
    reasons (e.g. a failed fairness gate) that keep a model out of the registry altogether.
    """
    if blocked:
        return Registered(name, "", False, "not registered: " + "; ".join(blocked))
    version = mlflow.register_model(model_uri, name).version
    incumbent = current_champion(client, name)
    if incumbent is None:
        client.set_registered_model_alias(name, CHAMPION, version)
        return Registered(name, version, True, f"first version: champion ({metric} {new_score:.4f})")
    old = champion_score(champion_uri(name)) if champion_score else float("-inf")
    if np.isfinite(new_score) and new_score > old:
        client.set_registered_model_alias(name, CHAMPION, version)
        return Registered(
            name, version, True, f"beats champion v{incumbent.version}: {metric} {new_score:.4f} > {old:.4f}"
        )
    return Registered(
        name,
        version,
        False,
        f"champion v{incumbent.version} kept: {metric} {new_score:.4f} <= {old:.4f} on the same holdout",
    )


def load_champion(kind: str, name: str) -> tuple[Any, str]:
    """Our native model behind ``models:/<name>@champion`` and its version."""
    client = MlflowClient()
    version = client.get_model_version_by_alias(name, CHAMPION)
    local = Path(mlflow.artifacts.download_artifacts(champion_uri(name)))
    return load_native(kind, local / "artifacts" / "model"), str(version.version)
