"""Apache Kafka's broker as Maven artifacts: resolved once into a cache folder, then reused.

``org.apache.kafka:kafka_2.13`` and its runtime dependencies are resolved by Maven (``mvn``)
from Maven Central into ``$WARMCAST_KAFKA_CACHE`` (default ``~/.cache/warmcast/kafka``,
outside any clone, so that fresh clones on one machine share it): a local Maven
repository under ``m2/`` and, per Kafka version, the broker's class path in
``<version>/classpath.txt``. Once that file exists and names jars that are all there,
no Maven runs again. ``$WARMCAST_KAFKA_VERSION`` picks another 4.x release.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

#: The Apache Kafka release the broker runs by default.
KAFKA_VERSION = "4.4.0"
#: slf4j 1.7 -> log4j 2 binding, so the broker's own log lines reach its log file.
LOG4J_VERSION = "2.25.5"
#: Longest a cold resolve may take.
RESOLVE_TIMEOUT_SECONDS = 900.0


class ArtifactsError(RuntimeError):
    """Java, Maven or the broker's artifacts are missing, or could not be resolved."""


def cache_dir() -> Path:
    """``$WARMCAST_KAFKA_CACHE``, else ``$XDG_CACHE_HOME/warmcast/kafka`` or
    ``~/.cache/warmcast/kafka``."""
    override = os.environ.get("WARMCAST_KAFKA_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "warmcast" / "kafka"


def kafka_version() -> str:
    return os.environ.get("WARMCAST_KAFKA_VERSION") or KAFKA_VERSION


def java_binary() -> Path:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH (the broker needs Java 17 or later)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return Path(home) / "bin" / "java"
    found = shutil.which("java")
    if found:
        return Path(found)
    raise ArtifactsError(
        "Java was not found (Apache Kafka needs Java 17 or later): install a JDK or JRE, "
        "e.g. apt-get install openjdk-17-jre-headless, or set JAVA_HOME"
    )


def pom(version: str) -> str:
    """The Maven project whose runtime class path is the broker's.

    >>> "<version>4.4.0</version>" in pom("4.4.0")
    True
    """
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>warmcast</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.6.1</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def _cached(path: Path) -> str | None:
    """The class path stored at ``path`` if every jar it names is still there."""
    if not path.is_file():
        return None
    classpath = path.read_text().strip()
    jars = classpath.split(os.pathsep) if classpath else []
    if not jars or not all(Path(jar).is_file() for jar in jars):
        return None
    return classpath


def classpath(version: str | None = None, resolve: bool = True) -> str:
    """The broker's class path, resolved by Maven on first use (minutes, once).

    Concurrent callers wait for one resolve (a lock file in the cache folder).
    """
    version = version or kafka_version()
    folder = cache_dir() / version
    stored = folder / "classpath.txt"
    found = _cached(stored)
    if found:
        return found
    if not resolve:
        raise ArtifactsError(f"Apache Kafka {version} is not resolved in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _cached(stored)  # resolved by another process meanwhile
        if found:
            return found
        _resolve(version, folder, stored)
    found = _cached(stored)
    if not found:
        raise ArtifactsError(f"Maven wrote no usable class path to {stored}")
    return found


def _resolve(version: str, folder: Path, stored: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ArtifactsError(
            "Maven (mvn) was not found: it resolves Apache Kafka's broker from Maven Central "
            "on first use; install it (e.g. apt-get install maven)"
        )
    (folder / "pom.xml").write_text(pom(version))
    partial = folder / "classpath.txt.part"
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(folder / "pom.xml"),
        f"-Dmaven.repo.local={cache_dir() / 'm2'}",
        "dependency:build-classpath",
        "-Dmdep.includeScope=runtime",
        f"-Dmdep.outputFile={partial}",
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=RESOLVE_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ArtifactsError(
            f"Maven did not resolve Apache Kafka {version} within "
            f"{RESOLVE_TIMEOUT_SECONDS:.0f}s (is Maven Central reachable?)"
        ) from exc
    if done.returncode != 0 or not partial.is_file():
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise ArtifactsError(
            f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} "
            "(is Maven Central reachable?):\n" + "\n".join(tail)
        )
    partial.replace(stored)
