"""``GET /v1/keys/signing``: the manifest-signing public key, for checking manifest.json.sig."""

from __future__ import annotations

from aiohttp import web

from ..errors import ApiError
from ..web import DEPS, json_response


async def signing_key(request: web.Request) -> web.Response:
    """The manifest-signing public key (PEM) and its key id, for verifying manifest.json.sig."""
    key = request.app[DEPS].signing
    if key is None:
        raise ApiError(503, "The API has no signing key loaded; check its log, then restart it.")
    return json_response(
        {"algorithm": key.algorithm, "key_id": key.key_id, "public_key_pem": key.public_key_pem}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/keys/signing", signing_key)
