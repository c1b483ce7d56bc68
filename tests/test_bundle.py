"""The Databricks bundle (databricks.yml + resources/*.yml) is consistent with the code it deploys.

Fast and offline: no Spark, no Databricks CLI. Checks that every job task calls a real
``journeylake`` verb with arguments the CLI accepts, that referenced files exist, and that every
``${var.X}`` is a declared bundle variable.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.cli import VERBS, build_parser
from pipelines.config import load_config
from pipelines.errors import JourneylakeError

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_FILE = ROOT / "databricks.yml"
VAR_REF = re.compile(r"\$\{var\.([A-Za-z0-9_-]+)\}")
# Databricks fills these in when a run starts; the checker parses a task's arguments with a sample.
DYNAMIC_REF = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
DYNAMIC_SAMPLES = {"job.start_time.iso_date": "2026-01-01", "job.run_id": "1", "job.id": "1"}
ENTRY_POINT = "journeylake"


def _read(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict), f"{path.relative_to(ROOT)}: expected a mapping at the top level"
    return data


def load_bundle(path: Path = BUNDLE_FILE) -> tuple[dict[str, Any], dict[Path, dict[str, Any]]]:
    """databricks.yml and each file its ``include`` globs match (relative to the bundle root)."""
    bundle = _read(path)
    included: dict[Path, dict[str, Any]] = {}
    for pattern in bundle.get("include") or []:
        matches = sorted(path.parent.glob(pattern))
        assert matches, f"{path.name}: include pattern {pattern!r} matches no file"
        for match in matches:
            included[match] = _read(match)
    return bundle, included


def iter_jobs(docs: dict[Path, dict[str, Any]]) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    for path, doc in docs.items():
        for key, job in ((doc.get("resources") or {}).get("jobs") or {}).items():
            yield path, key, job or {}


def iter_tasks(docs: dict[Path, dict[str, Any]]) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    for path, job_key, job in iter_jobs(docs):
        for task in job.get("tasks") or []:
            yield path, f"{job_key}.{task.get('task_key', '?')}", task


def var_refs(node: Any) -> set[str]:
    """Names of every ``${var.X}`` anywhere in a parsed YAML tree."""
    if isinstance(node, dict):
        return set().union(*(var_refs(k) | var_refs(v) for k, v in node.items())) if node else set()
    if isinstance(node, list):
        return set().union(*(var_refs(v) for v in node)) if node else set()
    if isinstance(node, str):
        return set(VAR_REF.findall(node))
    return set()


def job_parameters(job: dict[str, Any]) -> dict[str, str]:
    """A job's declared parameters as ``{{job.parameters.<name>}}`` references, with their defaults."""
    return {f"job.parameters.{p['name']}": str(p.get("default", "")) for p in job.get("parameters") or []}


def wheel_task_problems(task: dict[str, Any], parameters: dict[str, str] | None = None) -> list[str]:
    """What is wrong with a task's ``python_wheel_task`` (empty list: it runs a real journeylake verb);
    ``parameters``: the job's own (see job_parameters), filled in like the run's values."""
    wheel = task.get("python_wheel_task")
    if wheel is None:
        return []
    problems = []
    if wheel.get("package_name") != "journeylake":
        problems.append(f"package_name is {wheel.get('package_name')!r}, expected 'journeylake'")
    if wheel.get("entry_point") != ENTRY_POINT:
        problems.append(f"entry_point is {wheel.get('entry_point')!r}, expected {ENTRY_POINT!r}")
    params = [str(p) for p in wheel.get("parameters") or []]
    samples = {**DYNAMIC_SAMPLES, **(parameters or {})}
    unknown_refs = sorted({ref for p in params for ref in DYNAMIC_REF.findall(p)} - set(samples))
    if unknown_refs:
        problems.append(f"unknown dynamic value reference {', '.join(unknown_refs)}")
    params = [DYNAMIC_REF.sub(lambda m: samples.get(m.group(1), m.group(0)), p) for p in params]
    if not params:
        return [*problems, "no parameters: the first parameter must be a journeylake verb"]
    verb = params[0]
    if verb not in VERBS:
        return [*problems, f"{verb!r} is not a journeylake verb (known: {', '.join(VERBS)})"]
    module_name = VERBS[verb][0]
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        return [*problems, f"verb {verb!r}: its module {module_name} does not import: {exc}"]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(params)
    except SystemExit:
        detail = stderr.getvalue().strip().splitlines()
        return [*problems, f"`journeylake {' '.join(params)}` is rejected: {detail[-1] if detail else '?'}"]
    target = getattr(args, "target", None)
    if target:
        try:
            load_config(target)
        except JourneylakeError as exc:
            problems.append(f"--target {target}: {exc}")
    return problems


def file_problems(task: dict[str, Any], base: Path) -> list[str]:
    """Files a task runs that do not exist (paths are relative to the resources file)."""
    problems = []
    candidates = [
        ("spark_python_task", "python_file", ("",)),
        ("notebook_task", "notebook_path", ("", ".py", ".ipynb", ".sql")),  # notebooks may omit the suffix
    ]
    for kind, field, suffixes in candidates:
        path = (task.get(kind) or {}).get(field)
        if not path or str(path).startswith(("/", "${")) or "://" in str(path):
            continue  # workspace / volume / templated paths are not in the repo
        if not any((base / f"{path}{s}").is_file() for s in suffixes):
            problems.append(f"{kind}.{field}: {path} not found next to {base.name}/")
    return problems


@pytest.fixture(scope="module")
def bundle() -> tuple[dict[str, Any], dict[Path, dict[str, Any]]]:
    return load_bundle()


def test_bundle_is_named_and_declares_catalog_and_schema(bundle) -> None:
    root, _ = bundle
    assert root.get("bundle", {}).get("name") == "journeylake"
    variables = root.get("variables") or {}
    assert {"catalog", "schema"} <= set(variables), f"declared variables: {sorted(variables)}"


def test_targets_dev_and_prod_have_the_right_modes(bundle) -> None:
    targets = bundle[0].get("targets") or {}
    assert targets.get("dev", {}).get("mode") == "development"
    assert targets.get("dev", {}).get("default") is True
    assert targets.get("prod", {}).get("mode") == "production"


def test_include_finds_resources_and_a_wheel_artifact_is_built(bundle) -> None:
    root, included = bundle
    assert "resources/*.yml" in (root.get("include") or [])
    assert included, "no resources file included"
    artifacts = root.get("artifacts") or {}
    assert any(a.get("type") == "whl" for a in artifacts.values()), "no whl artifact in databricks.yml"


def test_every_job_has_a_task_and_its_cluster_exists(bundle) -> None:
    jobs = list(iter_jobs(bundle[1]))
    assert jobs, "no job defined under resources/"
    for path, key, job in jobs:
        tasks = job.get("tasks") or []
        assert tasks, f"{path.name}: job {key} has no task"
        clusters = {c.get("job_cluster_key") for c in job.get("job_clusters") or []}
        for task in tasks:
            cluster = task.get("job_cluster_key")
            assert cluster is None or cluster in clusters, (
                f"{path.name}: {key}.{task.get('task_key')} uses job_cluster_key {cluster!r}, "
                f"not one of {sorted(clusters)}"
            )


def test_every_job_runs_one_run_at_a_time_as_the_home_locks_do_locally(bundle) -> None:
    for path, key, job in iter_jobs(bundle[1]):
        assert job.get("max_concurrent_runs") == 1, f"{path.name}: job {key} may run twice at once"


def test_every_wheel_task_runs_a_real_verb_with_accepted_arguments(bundle) -> None:
    problems = [
        f"{path.name}: {key}.{task.get('task_key', '?')}: {problem}"
        for path, key, job in iter_jobs(bundle[1])
        for task in job.get("tasks") or []
        for problem in wheel_task_problems(task, job_parameters(job))
    ]
    assert not problems, "\n".join(problems)


def test_every_wheel_task_installs_the_bundle_wheel(bundle) -> None:
    for path, where, task in iter_tasks(bundle[1]):
        if "python_wheel_task" in task and "environment_key" not in task:
            wheels = [lib["whl"] for lib in task.get("libraries") or [] if "whl" in lib]
            assert wheels, f"{path.name}: {where} runs the wheel but does not install it (libraries: - whl:)"


def test_every_referenced_file_exists(bundle) -> None:
    problems = [
        f"{path.name}: {where}: {problem}"
        for path, where, task in iter_tasks(bundle[1])
        for problem in file_problems(task, path.parent)
    ]
    assert not problems, "\n".join(problems)


def test_every_variable_reference_is_declared(bundle) -> None:
    root, included = bundle
    declared = set(root.get("variables") or {})
    used = var_refs(root) | set().union(*(var_refs(doc) for doc in included.values()))
    for name, target in (root.get("targets") or {}).items():
        used |= set((target or {}).get("variables") or {})  # targets may only set declared variables
        assert target is not None, f"target {name} is empty"
    assert used <= declared, f"undeclared bundle variables: {sorted(used - declared)}"


def test_every_variable_has_a_value_in_every_target(bundle) -> None:
    root, _ = bundle
    for target_name, target in (root.get("targets") or {}).items():
        overrides = (target or {}).get("variables") or {}
        missing = [
            name
            for name, spec in (root.get("variables") or {}).items()
            if "default" not in (spec or {}) and "lookup" not in (spec or {}) and name not in overrides
        ]
        assert not missing, f"target {target_name}: variables without a value: {missing}"


# The checker itself must be able to fail.


def test_checker_rejects_an_unknown_verb() -> None:
    task = {
        "python_wheel_task": {
            "package_name": "journeylake",
            "entry_point": "journeylake",
            "parameters": ["no-such-verb", "--target", "databricks"],
        }
    }
    assert any("not a journeylake verb" in p for p in wheel_task_problems(task))


def test_checker_rejects_an_unknown_option_and_a_wrong_entry_point() -> None:
    task = {
        "python_wheel_task": {
            "package_name": "journeylake",
            "entry_point": "main",
            "parameters": ["ingest", "--no-such-option"],
        }
    }
    problems = wheel_task_problems(task)
    assert any("entry_point" in p for p in problems)
    assert any("rejected" in p and "--no-such-option" in p for p in problems)


def test_checker_rejects_an_unknown_config_target() -> None:
    task = {
        "python_wheel_task": {
            "package_name": "journeylake",
            "entry_point": "journeylake",
            "parameters": ["ingest", "--target", "no-such-target"],
        }
    }
    assert any("unknown target" in p for p in wheel_task_problems(task))


def test_checker_finds_missing_files_and_undeclared_variables(tmp_path: Path) -> None:
    assert file_problems({"spark_python_task": {"python_file": "../nope.py"}}, tmp_path)
    assert var_refs({"a": ["x ${var.catalog} ${var.nope}"]}) == {"catalog", "nope"}


def test_checker_fills_in_run_dates_and_rejects_unknown_dynamic_references() -> None:
    def task(date_text: str) -> dict[str, Any]:
        params = ["export-segments", "--date", date_text, "--target", "databricks"]
        return {
            "python_wheel_task": {
                "package_name": "journeylake",
                "entry_point": "journeylake",
                "parameters": params,
            }
        }

    assert wheel_task_problems(task("{{job.start_time.iso_date}}")) == []
    assert any("job.no_such_value" in p for p in wheel_task_problems(task("{{job.no_such_value}}")))
    assert any("rejected" in p for p in wheel_task_problems(task("yesterday")))
    # a job parameter counts only where the job declares it
    declared = job_parameters({"parameters": [{"name": "day", "default": "2026-01-02"}]})
    assert wheel_task_problems(task("{{job.parameters.day}}"), declared) == []
    assert any("job.parameters.day" in p for p in wheel_task_problems(task("{{job.parameters.day}}")))


def test_segment_exports_are_scheduled_daily_by_default(bundle) -> None:
    root, included = bundle
    jobs = {key: job for _path, key, job in iter_jobs(included)}
    schedule = jobs["segment_export"]["schedule"]
    assert schedule["quartz_cron_expression"] == "${var.export_cron}"
    assert root["variables"]["export_cron"]["default"] == "0 0 6 * * ?"
