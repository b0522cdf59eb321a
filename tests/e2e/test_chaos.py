"""A small chaos run as part of the suite: ``python -m resguardo.chaos`` (what ``make chaos``
runs) with 10 recordings and 15 kills -9 over three NATS nodes, two instances of every service
and a replicated SeaweedFS backup store. Judged from its JSON line: nothing lost, nothing
duplicated, every file matches its SHA256SUMS, and every kind of target was killed at least
once (else the run proved less than it claims)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resguardo.chaos_load import KINDS

from ..servers import REPO

pytestmark = pytest.mark.slow

RECORDINGS, KILLS = 10, 15
SEED = int(os.environ.get("RESGUARDO_CHAOS_SEED", "12"))  # another seed: another schedule


@pytest.mark.timeout(330)
def test_a_small_chaos_run_loses_duplicates_and_corrupts_nothing(tmp_path: Path) -> None:
    work = tmp_path / "chaos"
    argv = [sys.executable, "-m", "resguardo.chaos", "--recordings", str(RECORDINGS)]
    argv += ["--kills", str(KILLS), "--seed", str(SEED), "--work-dir", str(work)]
    argv += ["--settle-timeout", "120"]
    # The run stops every process it starts, also when it is interrupted (SIGTERM).
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=90)
        raise AssertionError(f"the chaos run took over 300 s:\n{err[-3000:]}") from None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line (exit {proc.returncode}):\n{err[-3000:]}"
    result = json.loads(lines[-1])
    print(lines[-1])  # the figures, with -s
    why = f"{json.dumps(result['problems'], indent=1)}\nlogs: {work}\n{err[-2000:]}"
    assert result["recordings_started"] == RECORDINGS, why
    assert result["lost"] == 0, why
    assert result["duplicated"] == 0, why
    assert result["hash_mismatches"] == 0, why
    assert result["uploaded"] == RECORDINGS, why
    assert result["kills"] == KILLS, result
    assert all(result["kills_by_target"][kind] >= 1 for kind in KINDS), result
    assert result["not_restarted"] == [], result
    assert proc.returncode == 0, why
