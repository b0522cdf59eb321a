"""The dashboard: server-rendered pages over the API's read model, served by the API itself.

Pages are Jinja2 templates (autoescaped) under ``templates/``; the only assets are ours, under
``static/``, served from the API's own origin, so the Content-Security-Policy allows nothing
else: no inline script, no third-party origin. Forms that change anything carry the session's
CSRF token (``csrf_token`` in every template's context).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

HERE = Path(__file__).parent
STATIC = HERE / "static"
# No inline script or style, nothing from elsewhere, no framing, forms post only to us.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# Set on the request by the session middleware (``services/api/auth``).
PRINCIPAL_KEY = "resguardo.principal"
CSRF_KEY = "resguardo.csrf_token"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(("html",), default=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """A page: the template with the principal, the CSRF token and the current path."""
    body = _env.get_template(template).render(
        principal=request.get(PRINCIPAL_KEY),
        csrf_token=request.get(CSRF_KEY, ""),
        path=request.path,
        **context,
    )
    return web.Response(
        text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )
