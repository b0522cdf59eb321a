"""``resguardo up``: start the whole system (see resguardo/supervisor.py)."""

from __future__ import annotations

import argparse
from typing import Any

from shared.config import ConfigError

from ..cli import CliError


def _run(args: argparse.Namespace) -> int:
    from ..supervisor import up

    try:
        if args.instances < 1 or args.instances > 16:
            raise CliError("--instances must be between 1 and 16.")
        if args.cluster not in (1, 3, 5):
            raise CliError("--cluster must be 1, 3 or 5 (a quorum needs an odd number of nodes).")
        return up(args.instances, args.cluster)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "up",
        help="start every service, with embedded NATS and PostgreSQL",
        description="Start the whole system on this machine. Configure with "
        "RESGUARDO_* environment variables (see README).",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        metavar="N",
        help="run N instances of every service, each with its own data dir under "
        "<data dir>/instances/ (default 1)",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=1,
        metavar="N",
        help="run the embedded NATS as a JetStream cluster of N nodes on this machine "
        "(ports RESGUARDO_NATS_PORT, +1, ...), with every stream replicated 3 times (default 1)",
    )
    parser.set_defaults(func=_run)
