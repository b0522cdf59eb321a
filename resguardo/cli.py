"""``resguardo``: one console script; each command group lives in ``resguardo/commands/<name>.py``.

A command module exposes ``register(sub: argparse._SubParsersAction) -> None`` and sets
``func=<callable(args) -> int>`` on its parsers. Errors reach the user as one sentence saying
what went wrong and what to do (``CliError``), never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "up",
    "config",
    "recordings",
    "destinations",
    "webhooks",
    "tenants",
    "users",
    "keys",
    "schema",
    "demo",
    "verify",
    "nats_context",
    "nats_config",
    "status",
)


class CliError(Exception):
    """A user-facing failure: the message is the whole explanation."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resguardo",
        description="Secure call recording: WebRTC in, verified files out in your own storage.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"resguardo.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"resguardo.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        raise SystemExit(2)
    try:
        code = func(args)
    except CliError as exc:
        print(f"resguardo: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # The reader went away (`resguardo status | head`): say nothing more, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None
    raise SystemExit(code or 0)


if __name__ == "__main__":
    main()
