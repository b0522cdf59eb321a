"""A small synchronous HTTPS client for the CLI: where the API is, which token, which CA.

Where the API is:
    RESGUARDO_API_URL (+ RESGUARDO_API_TOKEN), else ``<data dir>/run/endpoints.json`` written by
    ``resguardo up`` (keys ``api_url``, ``ca_file``, ``dev_token_file``, ``admin_token_file``);
    the data dir is RESGUARDO_DATA_DIR or ``./.resguardo``.
TLS: only ``ca_file`` is trusted when given (pinning); RESGUARDO_CA_FILE overrides it.
Tokens: RESGUARDO_API_TOKEN (RESGUARDO_ADMIN_TOKEN for admin commands), else the token files.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.tls import client_context

from .cli import CliError

DEFAULT_TIMEOUT = 90.0  # creating a destination may probe it first


def data_dir() -> Path:
    return Path(os.environ.get("RESGUARDO_DATA_DIR") or ".resguardo").expanduser()


def endpoints_path() -> Path:
    return data_dir() / "run" / "endpoints.json"


def load_endpoints() -> dict[str, Any]:
    path = endpoints_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise CliError(
            f"{path} is unreadable or not JSON; restart `resguardo up` to rewrite it."
        ) from None
    return data if isinstance(data, dict) else {}


def _read_token(path: Path, what: str) -> str:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise CliError(
            f"No {what} token: {path} does not exist; start the system with `resguardo up` "
            f"or set {'RESGUARDO_ADMIN_TOKEN' if what == 'admin' else 'RESGUARDO_API_TOKEN'}."
        ) from None
    except OSError as exc:
        raise CliError(f"Cannot read the {what} token file {path} ({exc.strerror}).") from None
    if not token:
        raise CliError(f"The {what} token file {path} is empty; restart `resguardo up`.")
    return token


@dataclass(frozen=True)
class Endpoint:
    url: str
    ca_file: Path | None
    token: str = field(repr=False)


def resolve(*, admin: bool = False) -> Endpoint:
    endpoints = load_endpoints()
    url = os.environ.get("RESGUARDO_API_URL") or endpoints.get("api_url") or ""
    if not url:
        raise CliError(
            "Cannot find the API: set RESGUARDO_API_URL, or start the system with `resguardo up`."
        )
    url = url.rstrip("/")
    if not url.startswith("https://"):
        raise CliError(f"The API URL {url} must start with https://; fix RESGUARDO_API_URL.")
    ca_raw = os.environ.get("RESGUARDO_CA_FILE") or endpoints.get("ca_file") or ""
    ca_file = Path(ca_raw).expanduser() if ca_raw else None
    if ca_file is not None and not ca_file.is_file():
        raise CliError(f"The CA file {ca_file} does not exist; fix RESGUARDO_CA_FILE.")
    secrets_dir = data_dir() / "secrets"
    if admin:
        token = os.environ.get("RESGUARDO_ADMIN_TOKEN") or _read_token(
            Path(endpoints.get("admin_token_file") or secrets_dir / "admin-token"), "admin"
        )
    else:
        token = os.environ.get("RESGUARDO_API_TOKEN") or _read_token(
            Path(endpoints.get("dev_token_file") or secrets_dir / "dev-api-token"), "API"
        )
    return Endpoint(url=url, ca_file=ca_file, token=token)


def segment(value: str) -> str:
    """One URL path segment: nothing the user types can add a '/' or a '..' to the path."""
    return urllib.parse.quote(value, safe="")


class ApiClient:
    def __init__(self, endpoint: Endpoint, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._ssl = client_context(endpoint.ca_file)

    @classmethod
    def from_env(cls, *, admin: bool = False) -> ApiClient:
        return cls(resolve(admin=admin))

    def request(self, method: str, path: str, body: Any = None) -> Any:
        url = self.endpoint.url + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (https only)
        req.add_header("Authorization", f"Bearer {self.endpoint.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        del data
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_http_error(exc)) from None
        except urllib.error.URLError as exc:
            raise CliError(self._unreachable(exc.reason)) from None
        except TimeoutError:
            raise CliError(
                f"The API at {self.endpoint.url} did not answer within {self.timeout:.0f} s; "
                "check that it is running, then retry."
            ) from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            raise CliError(self._unreachable(exc)) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(
                f"The API at {self.endpoint.url} sent a reply that is not JSON; is that URL "
                "really the Resguardo API?"
            ) from None

    def _unreachable(self, reason: object) -> str:
        url = self.endpoint.url
        if isinstance(reason, ssl.SSLCertVerificationError):
            trust = self.endpoint.ca_file or "the system's CA store"
            return (
                f"The API at {url} presented a certificate that {trust} does not trust; "
                "point RESGUARDO_CA_FILE at the API's certificate."
            )
        if isinstance(reason, TimeoutError):
            return (
                f"The API at {url} did not answer within {self.timeout:.0f} s; "
                "check that it is running, then retry."
            )
        return f"Cannot reach the API at {url}; is `resguardo up` running?"


def _http_error(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
        message = str(payload["error"]["message"]).strip()
    except (ValueError, KeyError, TypeError, OSError):
        message = ""
    if not message:
        return f"The API refused the request (HTTP {exc.code}); check the command and retry."
    return message


# --- output helpers for the command modules -------------------------------------------------


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain left-aligned table (no colours, no box drawing: easy to grep)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def short_time(value: Any) -> str:
    """'2026-01-02T03:04:05.678Z' -> '2026-01-02 03:04:05'."""
    text = str(value or "")
    return text[:19].replace("T", " ")


def human_size(size: Any) -> str:
    n = float(size or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
