"""``resguardo up``: start the whole system (see resguardo/supervisor.py)."""

from __future__ import annotations

import argparse
from typing import Any

from shared.config import ConfigError

from ..cli import CliError


def _run(args: argparse.Namespace) -> int:
    from ..supervisor import up

    try:
        return up()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "up",
        help="start every service, with embedded NATS and PostgreSQL",
        description="Start the whole system on this machine. Configure with "
        "RESGUARDO_* environment variables (see README).",
    )
    parser.set_defaults(func=_run)
