"""JVM jars journeylake adds to Spark: resolved once, then used from a local cache.

``make jars`` (``python -m pipelines.jars``) runs Maven on ``conf/jvm/pom.xml`` and copies
Delta, the Kafka connector and the Derby network client/server into ``.cache/jars/``:

- ``.cache/jars/spark/``  jars put on Spark's classpath (``spark.jars`` with local paths);
- ``.cache/jars/derby/``  the Derby network server's classpath (the shared metastore);
- ``.cache/jars/manifest.json``  what was resolved, from which pom, for which pyspark.

Any jar whose artifact pyspark already bundles (in ``pyspark/jars``) is dropped, so Spark never
sees two versions of one library. Once the cache exists, starting Spark needs no network and
never re-resolves (no ``spark.jars.packages``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.errors import SetupError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POM = PROJECT_ROOT / "conf" / "jvm" / "pom.xml"
MANIFEST_VERSION = 1

# jars of these artifacts also go on Spark's classpath; the other derby* jars are server-only
# (the embedded engine, derbyshared and derbytools already ship inside pyspark).
_SPARK_SIDE_DERBY = {"derbyclient"}

_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d+\.\d+[^-]*(?:-[A-Za-z][^-]*)*)\.jar$")


def cache_dir() -> Path:
    """Where resolved jars live (``<project>/.cache/jars``; ``JOURNEYLAKE_JAR_CACHE`` overrides)."""
    override = os.environ.get("JOURNEYLAKE_JAR_CACHE")
    return Path(override).resolve() if override else PROJECT_ROOT / ".cache" / "jars"


def artifact_of(jar_name: str) -> str:
    """``kafka-clients-3.9.2.jar`` -> ``kafka-clients`` (the name without its version)."""
    match = _JAR_NAME.match(jar_name)
    return match.group("artifact") if match else jar_name.removesuffix(".jar")


def pyspark_jars_dir() -> Path:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError("pyspark is not installed in this Python: run `make venv`")
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


def _pyspark_version() -> str:
    try:
        return importlib.metadata.version("pyspark")
    except importlib.metadata.PackageNotFoundError:
        raise SetupError("pyspark is not installed in this Python: run `make venv`") from None


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _read_manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _problem(directory: Path) -> str | None:
    """Why the cache in ``directory`` cannot be used as it is, or None if it is up to date."""
    manifest = _read_manifest(directory)
    if manifest is None or manifest.get("manifest_version") != MANIFEST_VERSION:
        return f"no resolved JVM jars in {directory}"
    if manifest.get("pom_sha256") != _pom_digest():
        return f"{POM.relative_to(PROJECT_ROOT)} changed since the jars in {directory} were resolved"
    if manifest.get("pyspark") != _pyspark_version():
        return (
            f"the jars in {directory} were resolved for pyspark {manifest.get('pyspark')}, "
            f"but pyspark {_pyspark_version()} is installed"
        )
    for group in ("spark", "derby"):
        for name in manifest.get(group, []):
            if not (directory / group / name).is_file():
                return f"{directory / group / name} is missing"
    return None


def _jars(group: str) -> list[Path]:
    directory = cache_dir()
    problem = _problem(directory)
    if problem:
        raise SetupError(f"{problem}: run `make jars`")
    manifest = _read_manifest(directory) or {}
    return [directory / group / name for name in manifest[group]]


def spark_jars() -> list[Path]:
    """Local jar paths for ``spark.jars`` (Delta, Kafka connector, Derby client).

    Raises SetupError ("run `make jars`") if the cache is missing or stale.
    """
    return _jars("spark")


def derby_server_classpath() -> list[Path]:
    """Jars that run the Derby network server (the shared metastore's own process)."""
    return _jars("derby")


def _failed_artifacts(log: str) -> list[str]:
    """The artifacts Maven was fetching when it failed, as precisely as its log says."""
    listed = re.search(r"The following artifacts could not be resolved: (.+?): ", log)
    if listed:
        return [a.strip() for a in listed.group(1).split(",")]
    patterns = (
        r"Could not find artifact (\S+)",
        r"Failed to read artifact descriptor for (\S+)",
        r"Could not transfer artifact (\S+)",
        r"Plugin (\S+) or one of its dependencies could not be resolved",
    )
    for pattern in patterns:
        match = re.search(pattern, log)
        if match:
            return [match.group(1).rstrip(":,")]
    downloads = re.findall(r"Downloading from [^:]+: \S+?/maven2/(\S+)", log)
    return [downloads[-1]] if downloads else []


def _failure_reason(log: str) -> str:
    if re.search(r"was not found in|Could not find artifact", log):
        return "not found in the Maven repository (is the version right?)"
    if re.search(r"UnknownHost|Connection refused|timed out|Could not transfer", log):
        return "the Maven repository could not be reached (network?)"
    errors = [ln.removeprefix("[ERROR]").strip() for ln in log.splitlines() if ln.startswith("[ERROR]")]
    return errors[0][:200] if errors else "mvn failed"


def resolve(force: bool = False, quiet: bool = False) -> Path:
    """Resolve the jars in conf/jvm/pom.xml into the cache, unless it is already up to date."""
    target = cache_dir()
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    if not force and _problem(target) is None:
        (target / "manifest.json").touch()  # lets `make` see the cache as newer than the pom
        say(f"jars: up to date in {target}")
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SetupError("Maven (`mvn`) is not on PATH; install it (Debian: apt-get install maven)")

    bundled = {artifact_of(p.name) for p in pyspark_jars_dir().glob("*.jar")}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="jars-", dir=target.parent))
    log_path = target.parent / "mvn-jars.log"
    say(f"jars: resolving Delta, Kafka connector and Derby from {POM.relative_to(PROJECT_ROOT)} with mvn ...")
    try:
        proc = subprocess.run(
            [
                mvn,
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging / 'all'}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            cwd=staging,
        )
        log_path.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            log = proc.stdout + proc.stderr
            failed = _failed_artifacts(log)
            what = failed[0] if failed else "(unknown artifact)"
            also = f" (also {', '.join(failed[1:])})" if len(failed) > 1 else ""
            raise SetupError(
                f"could not resolve JVM jar {what}{also} from {POM.relative_to(PROJECT_ROOT)}: "
                f"{_failure_reason(log)}; full Maven log: {log_path}"
            )

        spark_dir, derby_dir = staging / "spark", staging / "derby"
        spark_dir.mkdir()
        derby_dir.mkdir()
        manifest: dict = {
            "manifest_version": MANIFEST_VERSION,
            "pom_sha256": _pom_digest(),
            "pyspark": _pyspark_version(),
            "spark": [],
            "derby": [],
            "dropped_bundled_by_pyspark": [],
        }
        for jar in sorted((staging / "all").glob("*.jar")):
            artifact = artifact_of(jar.name)
            if artifact.startswith("derby"):
                shutil.copy2(jar, derby_dir / jar.name)
                manifest["derby"].append(jar.name)
                if artifact not in _SPARK_SIDE_DERBY:
                    continue
            if artifact in bundled:
                manifest["dropped_bundled_by_pyspark"].append(jar.name)
                continue
            shutil.copy2(jar, spark_dir / jar.name)
            manifest["spark"].append(jar.name)
        shutil.rmtree(staging / "all")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    size = sum(p.stat().st_size for p in target.rglob("*.jar")) / 1e6
    say(
        f"jars: {len(manifest['spark'])} for Spark, {len(manifest['derby'])} for the metastore "
        f"({size:.0f} MB) in {target}"
    )
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print("usage: python -m pipelines.jars [--force]\n\nresolve JVM jars into .cache/jars (once)")
        return 0
    try:
        resolve(force="--force" in args)
    except SetupError as exc:
        print(f"jars: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
