"""The API's OpenAPI 3.1 document, served at ``GET /v1/openapi.json`` (with any valid token,
like every other /v1 route).

Every route of the app's router is in it but the dashboard's HTML pages (``EXCLUDED``, by path
prefix); ``tests/api/test_openapi.py`` checks that, that the document is valid, and validates
real answers of every operation against it. Operations: ``openapi_paths.py``; schemas:
``openapi_schemas.py``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web

from . import openapi_schemas
from .openapi_paths import PATHS
from .web import json_response

# HTML pages and their assets: not part of the JSON API.
EXCLUDED = ("/ui", "/signin", "/signout", "/static")


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Resguardo API",
            "version": "1",
            "description": "Recordings, their destinations, webhooks, backup usage and the audit "
            "trail. Every /v1 route needs `Authorization: Bearer <token>` (or a dashboard "
            "session); errors are "
            '`{"error": {"message", "field"}}`.',
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "security": [{"bearer": []}, {"session": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "resguardo_session",
                    "description": "A dashboard session (its changes also need X-CSRF-Token).",
                },
            },
            "schemas": openapi_schemas.components(),
        },
    }


def documented(path: str) -> bool:
    """Whether a route's path belongs in the document (every one but the HTML pages')."""
    if path == "/":
        return False  # the dashboard's home page
    return not any(path == p or path.startswith(p + "/") for p in EXCLUDED)


async def serve(request: web.Request) -> web.Response:
    return json_response(document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", serve)
