"""JVM jars journeylake runs: resolved once, then used from a local cache.

``make jars`` (``python -m pipelines.services.jars``) runs Maven on two poms and copies the jars into
``.cache/jars/``:

- ``conf/jvm/pom.xml`` -> Delta, the Kafka connector and the Derby network client/server:
  - ``.cache/jars/spark/``  jars put on Spark's classpath (``spark.jars`` with local paths);
  - ``.cache/jars/derby/``  the Derby network server's classpath (the shared metastore);
- ``conf/jvm/kafka-broker.pom.xml`` -> ``.cache/jars/kafka/``, the local Kafka broker's own
  classpath (a separate JVM, so nothing is filtered against pyspark);
- ``conf/jvm/data-docs.pom.xml`` -> ``.cache/jars/webjars/``, the scripts and styles of Great
  Expectations' Data Docs, served from the site itself (no CDN);
- ``.cache/jars/manifest.json``  what was resolved, from which pom (by digest), for which pyspark.

Any Spark-side jar whose artifact pyspark already bundles (in ``pyspark/jars``) is dropped, so
Spark never sees two versions of one library. Once the cache exists, starting Spark needs no
network and never re-resolves (no ``spark.jars.packages``).

Each pom is checked and resolved on its own: editing the broker's pom re-resolves only
``kafka/`` and leaves the jars of running Spark processes in place, and the reverse.
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
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import PROJECT_ROOT
from pipelines.errors import SetupError

POM = PROJECT_ROOT / "conf" / "jvm" / "pom.xml"
KAFKA_POM = PROJECT_ROOT / "conf" / "jvm" / "kafka-broker.pom.xml"
DOCS_POM = PROJECT_ROOT / "conf" / "jvm" / "data-docs.pom.xml"
MANIFEST_VERSION = 1

# jars of these artifacts also go on Spark's classpath; the other derby* jars are server-only
# (the embedded engine, derbyshared and derbytools already ship inside pyspark).
_SPARK_SIDE_DERBY = {"derbyclient"}

_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d+\.\d+[^-]*(?:-[A-Za-z][^-]*)*)\.jar$")


@dataclass(frozen=True)
class JarSet:
    """One pom and the cache folders (groups) its jars are sorted into."""

    pom: Path
    groups: tuple[str, ...]
    what: str  # for messages: "jars: resolving <what> from <pom> ..."
    digest_key: str  # manifest key holding the pom's sha256 when it was resolved
    log_name: str  # Maven's output, beside the cache
    for_spark: bool  # sorted against pyspark's bundled jars, so tied to the pyspark version


SPARK_SET = JarSet(
    POM, ("spark", "derby"), "Delta, Kafka connector and Derby", "pom_sha256", "mvn-jars.log", True
)
KAFKA_SET = JarSet(
    KAFKA_POM, ("kafka",), "the Kafka broker", "kafka_pom_sha256", "mvn-kafka-broker.log", False
)
DOCS_SET = JarSet(
    DOCS_POM, ("webjars",), "Data Docs' web assets", "docs_pom_sha256", "mvn-webjars.log", False
)
JAR_SETS = (SPARK_SET, KAFKA_SET, DOCS_SET)


def _set_of(group: str) -> JarSet:
    return next(s for s in JAR_SETS if group in s.groups)


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


def _pom_digest(pom: Path = POM) -> str:
    try:
        return hashlib.sha256(pom.read_bytes()).hexdigest()
    except OSError as exc:
        raise SetupError(f"cannot read {pom}: {exc.strerror or exc}") from None


def _read_manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _problem(directory: Path, jar_set: JarSet = SPARK_SET) -> str | None:
    """Why ``jar_set``'s jars in ``directory`` cannot be used as they are, or None if up to date."""
    manifest = _read_manifest(directory)
    if manifest is None or manifest.get("manifest_version") != MANIFEST_VERSION:
        return f"no resolved JVM jars in {directory}"
    pom = jar_set.pom.relative_to(PROJECT_ROOT)
    if jar_set.digest_key not in manifest:
        return f"the jars of {pom} are not in {directory}"
    if manifest[jar_set.digest_key] != _pom_digest(jar_set.pom):
        return f"{pom} changed since the jars in {directory} were resolved"
    if jar_set.for_spark and manifest.get("pyspark") != _pyspark_version():
        return (
            f"the jars in {directory} were resolved for pyspark {manifest.get('pyspark')}, "
            f"but pyspark {_pyspark_version()} is installed"
        )
    for group in jar_set.groups:
        for name in manifest.get(group, []):
            if not (directory / group / name).is_file():
                return f"{directory / group / name} is missing"
    return None


def _jars(group: str) -> list[Path]:
    directory = cache_dir()
    problem = _problem(directory, _set_of(group))
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


def kafka_broker_classpath() -> list[Path]:
    """Jars that run the local Kafka broker (its own process; see pipelines/kafka_broker.py)."""
    return _jars("kafka")


def webjars() -> list[Path]:
    """WebJars of the Data Docs' scripts and styles (pipelines/quality/data_docs.py)."""
    return _jars("webjars")


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


def _run_maven(mvn: str, jar_set: JarSet, into: Path, log_path: Path) -> None:
    """``mvn dependency:copy-dependencies`` of one pom; a failure names the artifact it was fetching."""
    pom = jar_set.pom.relative_to(PROJECT_ROOT)
    proc = subprocess.run(
        [
            mvn,
            "-B",
            "-f",
            str(jar_set.pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={into}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        cwd=into.parent,
    )
    log_path.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        log = proc.stdout + proc.stderr
        failed = _failed_artifacts(log)
        what = failed[0] if failed else "(unknown artifact)"
        also = f" (also {', '.join(failed[1:])})" if len(failed) > 1 else ""
        raise SetupError(
            f"could not resolve JVM jar {what}{also} from {pom}: {_failure_reason(log)}; "
            f"full Maven log: {log_path}"
        )


def _sort_spark_set(resolved: Path, staging: Path, manifest: dict) -> None:
    """Spark-side jars (minus what pyspark bundles) into spark/, the Derby server's into derby/."""
    bundled = {artifact_of(p.name) for p in pyspark_jars_dir().glob("*.jar")}
    (staging / "spark").mkdir()
    (staging / "derby").mkdir()
    manifest.update(
        {"pyspark": _pyspark_version(), "spark": [], "derby": [], "dropped_bundled_by_pyspark": []}
    )
    for jar in sorted(resolved.glob("*.jar")):
        artifact = artifact_of(jar.name)
        if artifact.startswith("derby"):
            shutil.copy2(jar, staging / "derby" / jar.name)
            manifest["derby"].append(jar.name)
            if artifact not in _SPARK_SIDE_DERBY:
                continue
        if artifact in bundled:
            manifest["dropped_bundled_by_pyspark"].append(jar.name)
            continue
        shutil.copy2(jar, staging / "spark" / jar.name)
        manifest["spark"].append(jar.name)


def _sort_whole_set(group: str, resolved: Path, staging: Path, manifest: dict) -> None:
    """Every jar of a pom into its one group (the broker's own JVM, the Data Docs' assets: nothing
    to filter against pyspark)."""
    (staging / group).mkdir()
    manifest[group] = []
    for jar in sorted(resolved.glob("*.jar")):
        shutil.copy2(jar, staging / group / jar.name)
        manifest[group].append(jar.name)


def _write_manifest(target: Path, manifest: dict) -> None:
    tmp = target / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(target / "manifest.json")  # atomic: readers see the old or the new manifest


def resolve(force: bool = False, quiet: bool = False) -> Path:
    """Resolve the poms in conf/jvm/ into the cache, each only if its jars are not up to date."""
    target = cache_dir()
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    stale = [s for s in JAR_SETS if force or _problem(target, s) is not None]
    if not stale:
        (target / "manifest.json").touch()  # lets `make` see the cache as newer than the poms
        say(f"jars: up to date in {target}")
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SetupError("Maven (`mvn`) is not on PATH; install it (Debian: apt-get install maven)")

    old = _read_manifest(target)
    manifest: dict = old if old and old.get("manifest_version") == MANIFEST_VERSION else {}
    if not manifest:  # nothing usable: every set is stale, the folder starts afresh
        stale = list(JAR_SETS)
    manifest["manifest_version"] = MANIFEST_VERSION
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="jars-", dir=target.parent))
    try:
        for jar_set in stale:
            say(f"jars: resolving {jar_set.what} from {jar_set.pom.relative_to(PROJECT_ROOT)} with mvn ...")
            resolved = staging / "all"
            _run_maven(mvn, jar_set, resolved, target.parent / jar_set.log_name)
            if jar_set.for_spark:
                _sort_spark_set(resolved, staging, manifest)
            else:
                _sort_whole_set(jar_set.groups[0], resolved, staging, manifest)
            manifest[jar_set.digest_key] = _pom_digest(jar_set.pom)
            shutil.rmtree(resolved)

        # every pom resolved: only now replace the stale groups (the others stay as they are)
        if not old or old.get("manifest_version") != MANIFEST_VERSION:
            shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        for jar_set in stale:
            for group in jar_set.groups:
                if (target / group).exists():
                    shutil.rmtree(target / group)
                (staging / group).rename(target / group)
        _write_manifest(target, manifest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    size = sum(p.stat().st_size for p in target.rglob("*.jar")) / 1e6
    say(
        f"jars: {len(manifest.get('spark', []))} for Spark, {len(manifest.get('derby', []))} for the "
        f"metastore, {len(manifest.get('kafka', []))} for the Kafka broker, "
        f"{len(manifest.get('webjars', []))} for Data Docs ({size:.0f} MB) in {target}"
    )
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(
            "usage: python -m pipelines.services.jars [--force]\n\nresolve JVM jars into .cache/jars (once)"
        )
        return 0
    try:
        resolve(force="--force" in args)
    except SetupError as exc:
        print(f"jars: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
