"""``resguardo nats-context [NAME]``: a nats CLI context that logs in as the operator.

The embedded nats-server of ``resguardo up`` refuses anonymous clients, so ``nats stream ls``
fails with "Authorization Violation" until the nats CLI knows the ``operator`` login. This writes
``$XDG_CONFIG_HOME/nats/context/<NAME>.json`` (default ``~/.config``) in the nats CLI's own format
(``natscontext`` in github.com/nats-io/jsm.go: every field its ``settings`` struct serialises, in
its order, mode 0600 under 0700 directories, written atomically) and, with ``--select``, records
NAME in ``nats/context.txt`` as ``nats context select`` does. The URL carries no password; the
password is printed only with ``--show-password`` and never passes through argv.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.config import CommonConfig, ConfigError, env_name, load
from shared.embedded import OPERATOR
from shared.files import write_private

from ..cli import CliError
from ..client import print_json


def config_root() -> Path:
    """Where the nats CLI keeps its configuration: ``$XDG_CONFIG_HOME`` or ``~/.config``."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg else Path.home() / ".config"


def context_settings(*, url: str, password: str, ca: str, description: str) -> dict[str, Any]:
    """The fields natscontext writes (``json.MarshalIndent`` of its ``settings``), in order."""
    return {
        "description": description,
        "url": url,
        "socks_proxy": "",
        "token": "",
        "user": OPERATOR,
        "password": password,
        "creds": "",
        "nkey": "",
        "cert": "",
        "key": "",
        "ca": ca,
        "nsc": "",
        "jetstream_domain": "",
        "jetstream_api_prefix": "",
        "jetstream_event_prefix": "",
        "inbox_prefix": "",
        "user_jwt": "",
        "user_seed": "",
        "color_scheme": "",
        "tls_first": False,
        "windows_cert_store": "",
        "windows_cert_match_by": "",
        "windows_cert_match": "",
        "windows_ca_certs_match": None,
    }


def select(root: Path, name: str) -> None:
    """What ``nats context select NAME`` does: the old choice to previous-context.txt."""
    current = root / "nats" / "context.txt"
    try:
        previous = current.read_text().strip()
    except FileNotFoundError:
        previous = ""
    if previous:
        write_private(root / "nats" / "previous-context.txt", previous)
    write_private(current, name)


def _read(path: Path, what: str, data_dir: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise CliError(
            f"Resguardo is not running on {data_dir} ({what} {path} does not exist); start it "
            f"with `resguardo up` ({env_name('data_dir')}={data_dir}) and run this again."
        ) from None
    except OSError as exc:
        raise CliError(
            f"Cannot read {path} ({exc.strerror}); run this as the user that runs `resguardo up`."
        ) from None


def _not_ours() -> CliError:
    return CliError(
        f"{env_name('nats_url')} names a NATS server of your own, not the embedded one "
        "`resguardo up` starts, so there is no operator login to write; use your own "
        "server's login with the nats CLI."
    )


def operator_login(config: CommonConfig) -> tuple[str, str, str, Path]:
    """``(url without the login, operator password, CA file or "", data dir)``."""
    if config.nats_url:
        raise _not_ours()
    data_dir = config.data_dir.resolve()
    endpoints_path = data_dir / "run" / "endpoints.json"
    try:
        endpoints = json.loads(_read(endpoints_path, "its endpoints file", data_dir))
        urls = [urlsplit(u.strip()) for u in str(endpoints["nats_url"]).split(",") if u.strip()]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CliError(
            f"{endpoints_path} is not what `resguardo up` writes; restart `resguardo up`."
        ) from None
    if not urls or any(u.username != OPERATOR for u in urls):
        raise _not_ours()  # `resguardo up` ran against an external server: no login of ours
    password_path = data_dir / "secrets" / "nats" / f"{OPERATOR}.password"
    password = _read(password_path, "the operator's password file", data_dir).strip()
    if not password:
        raise CliError(f"{password_path} is empty; restart `resguardo up` to make a new one.")
    plain = ",".join(f"{u.scheme}://{u.netloc.rpartition('@')[2]}" for u in urls)
    ca = str(endpoints.get("ca_file") or "") if any(u.scheme == "tls" for u in urls) else ""
    return plain, password, ca, data_dir


def _run(args: argparse.Namespace) -> int:
    name: str = args.name
    if not name or ".." in name or "/" in name or "\\" in name:
        raise CliError(f'{name!r} is not a context name: use one without "/", "\\" or "..".')
    try:
        config = load(CommonConfig)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    url, password, ca, data_dir = operator_login(config)
    root = config_root()
    path = root / "nats" / "context" / f"{name}.json"
    fields = context_settings(
        url=url,
        password=password,
        ca=ca,
        description=f"Resguardo operator (all rights) on the NATS server of {data_dir}",
    )
    try:
        write_private(path, json.dumps(fields, indent=2))
        if args.select:
            select(root, name)
    except OSError as exc:
        raise CliError(
            f"Cannot write {path} ({exc.strerror}); check {root}'s permissions."
        ) from None
    if args.json:
        out = {"context": name, "path": str(path), "url": url, "user": OPERATOR}
        print_json(out | ({"password": password} if args.show_password else {}))
        return 0
    print(f"Wrote the nats CLI context {name!r} to {path} (user {OPERATOR}, mode 0600).")
    print(f"  NATS      {url}" + (f" (CA {ca})" if ca else ""))
    if args.show_password:
        print(f"  Password  {password}")
    print("Use it with the nats CLI:")
    print(f"  nats --context {name} stream ls")
    print(f"  nats --context {name} stream view CAPTURES")
    if args.select:
        print("It is the selected context now: plain `nats stream ls` uses it.")
    else:
        print(f"  nats context select {name}    # then plain `nats stream ls` uses it")
    print("It holds the operator's password (all rights): keep the file private.")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "nats-context",
        help="write a nats CLI context that logs in as the operator",
        description="Write a nats CLI context (in $XDG_CONFIG_HOME/nats/context, default "
        "~/.config) with the operator's login to the embedded NATS server, so "
        "`nats --context NAME stream ls` works.",
    )
    parser.add_argument("name", nargs="?", default="resguardo", help="context name")
    parser.add_argument(
        "--show-password", action="store_true", help="also print the operator's password"
    )
    parser.add_argument(
        "--select", action="store_true", help="make it the current context (nats context select)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_run)
