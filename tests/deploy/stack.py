"""The compose stack of deploy/ run for real with podman and podman-compose, for tests.

Everything it starts carries the compose project's name (containers, volumes, the network), so
``Stack.down`` can remove all of it even when podman-compose itself failed half-way.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.embedded import OPERATOR, SERVICE_RIGHTS, free_port
from shared.signing import load_or_create
from shared.tls import ensure_self_signed

from ..servers import REPO

DEPLOY = REPO / "deploy"
BASE_IMAGE = "localhost/debian-base:bookworm"
APP_IMAGE = "localhost/resguardo:dev"
# Our own images of the servers, for a host that cannot pull the official ones.
SERVER_IMAGES = {
    "NATS_IMAGE": ("nats", "localhost/resguardo-nats:dev"),
    "POSTGRES_IMAGE": ("postgres", "localhost/resguardo-postgres:dev"),
    "SEAWEEDFS_IMAGE": ("seaweedfs", "localhost/resguardo-seaweedfs:dev"),
}
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PROJECT_LABEL = "io.podman.compose.project"


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(DEPLOY / "podman" / "containers.conf")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run(
    args: list[str], *, env: dict[str, str], timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args[:4])}... failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def build_images(env: dict[str, str], log: Path) -> None:
    """The app image and the three server images, from the local Debian base (cache-friendly)."""
    args = ["podman", "build", "-f", "deploy/Dockerfile", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    if HOST_CA.exists():  # pip behind this machine's inspecting proxy; a mount, not a layer
        args += ["-v", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    with log.open("a") as out:
        for target, tag in [("resguardo", APP_IMAGE), *SERVER_IMAGES.values()]:
            subprocess.run(
                [*args, "--target", target, "-t", tag, "."],
                env=env, cwd=REPO, stdout=out, stderr=out, check=True, timeout=420,
            )  # fmt: skip


def write_secrets(folder: Path, canary: str) -> dict[str, str]:
    """Every secret file the compose files name, 0600; returns the plain values used by tests."""
    folder.mkdir(mode=0o700, parents=True)
    values = {f"nats_{user}": secrets.token_urlsafe(24) for user in [*SERVICE_RIGHTS, OPERATOR]}
    values["postgres_password"] = secrets.token_urlsafe(24)
    values["backup_s3_secret"] = canary
    values["master_keys"] = "1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    for name, value in values.items():
        path = folder / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    load_or_create(folder / "signing_key")
    cert, key = ensure_self_signed(folder / "tls", ("127.0.0.1", "localhost"))
    shutil.copy(cert, folder / "tls_cert")
    shutil.copy(key, folder / "tls_key")
    for name in ("signing_key", "tls_cert", "tls_key"):
        (folder / name).chmod(0o600)
    return values


@dataclass
class Stack:
    project: str
    secrets_dir: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, tmp: Path, canary: str) -> Stack:
        secrets_dir = tmp / "secrets"
        write_secrets(secrets_dir, canary)
        ports = {
            name: free_port()
            for name in ("NATS_PORT_1", "NATS_PORT_2", "NATS_PORT_3", "S3_PORT", "API_PORT")
        }
        ports["WHIP_PORT"] = free_port("0.0.0.0")  # the proxy listens on every address
        env = podman_env() | {k: str(v) for k, v in ports.items()}
        env |= {k: tag for k, (_t, tag) in SERVER_IMAGES.items()}
        env |= {
            "RESGUARDO_IMAGE": APP_IMAGE,
            "RESGUARDO_SECRETS_DIR": str(secrets_dir),
            "WHIP_PUBLIC_URL": f"https://127.0.0.1:{ports['WHIP_PORT']}",
        }
        return cls(f"rgtest{secrets.token_hex(4)}", secrets_dir, env, ports)

    def compose(self, *args: str, file: str = "compose.yaml", timeout: float = 300) -> str:
        return run(
            ["podman-compose", "-p", self.project, "-f", str(DEPLOY / file), *args],
            env=self.env,
            timeout=timeout,
        ).stdout

    def podman(self, *args: str, check: bool = True) -> str:
        return run(["podman", *args], env=self.env, check=check).stdout

    def containers(self, service: str | None = None, *, running: bool = True) -> list[str]:
        filters = ["--filter", f"label={PROJECT_LABEL}={self.project}"]
        if service:
            filters += ["--filter", f"label=io.podman.compose.service={service}"]
        if running:
            filters += ["--filter", "status=running"]
        out = self.podman("ps", "-a", *filters, "--format", "{{.Names}}")
        return sorted(out.split())

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label={PROJECT_LABEL}={self.project}"
        vols = self.podman("volume", "ls", "--filter", label, "--format", "{{.Name}}", check=False)
        nets = self.podman("network", "ls", "--format", "{{.Name}}", check=False)
        pods = self.podman("pod", "ps", "--format", "{{.Name}}", check=False)
        return {
            "containers": self.containers(running=False),
            "volumes": vols.split(),
            "networks": [n for n in nets.split() if n.startswith(self.project)],
            "pods": [p for p in pods.split() if self.project in p],
        }

    def down(self) -> dict[str, list[str]]:
        """`down -v`, then whatever it missed, by the project's label and name; what is left."""
        run(
            ["podman-compose", "-p", self.project, "-f", str(DEPLOY / "compose.yaml"),
             "down", "-v", "-t", "5"],
            env=self.env, timeout=180, check=False,
        )  # fmt: skip
        left = self.leftovers()
        for kind, names in (
            ("container", left["containers"]),
            ("pod", left["pods"]),
            ("volume", left["volumes"]),
            ("network", left["networks"]),
        ):
            if names:
                self.podman(kind, "rm", "-f", *names, check=False)
        return self.leftovers()

    def cat(self, service: str, path: str) -> str:
        """A file inside the service's (first) container, read through podman's stdout."""
        return self.podman("exec", self.containers(service)[0], "cat", path).strip()

    def logs(self) -> str:
        parts = []
        for name in self.containers(running=False):
            out = run(["podman", "logs", "--tail", "40", name], env=self.env, check=False)
            parts.append(f"--- {name} ---\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        return "\n".join(parts)


def wait_until(what: Callable[[], Any], timeout: float, message: str, stack: Stack) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = what()
        except (AssertionError, OSError, subprocess.SubprocessError, LookupError, ValueError):
            result = None
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {message}\n{stack.logs()}")


def images_containing(
    env: dict[str, str], images: list[str], needle: bytes, tmp: Path
) -> list[str]:
    """Where ``needle`` appears: the images' saved layers and configs, their inspect, history."""
    found = []
    archive = tmp / "images.tar"
    # One archive for all: their shared layers are written (and searched) once.
    run(["podman", "save", "-m", "-o", str(archive), *images], env=env, timeout=300)
    try:
        with archive.open("rb") as fh:  # streamed: an overlap keeps a needle split by a read
            tail = b""
            while chunk := fh.read(1 << 22):
                if needle in tail + chunk:
                    found.append("saved images")
                    break
                tail = chunk[-len(needle) :]
    finally:
        archive.unlink(missing_ok=True)
    text = needle.decode()
    for image in images:
        if text in run(["podman", "image", "inspect", image], env=env).stdout:
            found.append(f"{image} inspect")
        history = run(["podman", "history", "--no-trunc", "--format", "json", image], env=env)
        if text in json.dumps(json.loads(history.stdout)):
            found.append(f"{image} history")
    return found
