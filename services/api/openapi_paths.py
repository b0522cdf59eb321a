"""The operations of the OpenAPI document (``openapi.py``): every route's summary, parameters,
body and answers (errors are ``Error``; 401, 500 and 503 go with every token-protected one)."""

from __future__ import annotations

from typing import Any

from . import openapi_schemas as s
from .query import PAGE_DEFAULT, PAGE_MAX
from .routes.usage import DAYS_DEFAULT, DAYS_MAX
from .state import STATES

_ERRORS = {
    400: "A malformed request or parameter (the field names it).",
    401: "No token, or not a valid one.",
    403: "The caller may not do this.",
    404: "No such thing for the caller's tenant.",
    409: "Not in a state that allows it.",
    413: "The body is too large.",
    422: "A body that decodes but is not acceptable (the field names it).",
    500: "The API failed on this request.",
    502: "The destination could not be reached.",
    503: "NATS, the database or the vault could not be reached; retry.",
    504: "The destination did not answer in time.",
}
_ALWAYS = (401, 500, 503)


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": s.ref(schema)}}}


def _param(name: str, where: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


def path_param(name: str, description: str) -> dict[str, Any]:
    return _param(name, "path", description, s.STRING)


def q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return _param(name, "query", description, schema or s.STRING)


LIMIT = q(
    "limit",
    f"Rows a page (default {PAGE_DEFAULT}, at most {PAGE_MAX}).",
    {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
)
CURSOR = q("cursor", "The previous page's next_cursor (opaque).")
TENANT = q("tenant_id", "Operators only: one tenant (default: every tenant).")
SINCE = q("since", "An ISO 8601 date (that day, UTC) or date-time; on created_at.")
UNTIL = q("until", "An ISO 8601 date (up to the end of that day, UTC) or date-time; inclusive.")
RECORDING_FILTERS = [
    LIMIT,
    CURSOR,
    q("state", "One or more states, comma separated: " + ", ".join(STATES) + "."),
    q("destination", "A destination's name or id."),
    SINCE,
    UNTIL,
    TENANT,
]
RECORDING_ID = path_param("recording_id", "rec_ and 24 hex digits.")
DESTINATION_NAME = path_param("name", "The destination's name.")
ENDPOINT_ID = path_param("endpoint_id", "wh_ and 16 hex digits.")
USER_REF = path_param("user_id", "A user id (usr_ and 16 hex digits) or an email.")


def op(
    summary: str,
    ok: tuple[int, str, str],
    errors: str = "",
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    optional_body: bool = False,
    public: bool = False,
    tag: str = "",
) -> dict[str, Any]:
    status, description, schema = ok
    responses: dict[str, Any] = {str(status): _answer(description, schema)}
    codes = {int(c) for c in errors.split()} | (set() if public else set(_ALWAYS))
    for code in sorted(codes):
        responses[str(code)] = _answer(_ERRORS[code], "Error")
    out: dict[str, Any] = {"summary": summary, "responses": responses}
    if tag:
        out["tags"] = [tag]
    if params:
        out["parameters"] = params
    if body:
        out["requestBody"] = {
            "required": not optional_body,
            "content": {"application/json": {"schema": s.ref(body)}},
        }
    if public:
        out["security"] = []
    return out


R, D, W, T, U = "recordings", "destinations", "webhooks", "tenants", "users"
OPS = "operations"

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": op(
            "Liveness: the API answers and reaches its database.",
            (200, "Healthy.", "Health"),
            "503",
            public=True,
            tag=OPS,
        )
    },
    "/v1/openapi.json": {
        "get": op("This document.", (200, "OpenAPI 3.1.", "OpenApiDocument"), tag=OPS)
    },
    "/v1/tenants": {
        "post": op(
            "Create a tenant and its first API token (admin token).",
            (201, "Created.", "TenantCreated"),
            "400 403 409 422",
            body="CreateTenant",
            tag=T,
        )
    },
    "/v1/tenants/{tenant_id}": {
        "parameters": [path_param("tenant_id", "ten_ and 16 hex digits.")],
        "patch": op(
            "Set a tenant's backup capacity (admin token); null: the default.",
            (200, "Updated.", "TenantUpdated"),
            "400 403 404 422",
            body="TenantSettings",
            tag=T,
        ),
    },
    "/v1/recordings": {
        "post": op(
            "Start a recording: its WHIP URL and token (shown once).",
            (201, "Started.", "RecordingStarted"),
            "400 403 404 422",
            body="StartRecording",
            tag=R,
        ),
        "get": op(
            "Recordings, newest first, a page at a time, filtered.",
            (200, "A page.", "RecordingPage"),
            "400 403",
            params=RECORDING_FILTERS,
            tag=R,
        ),
    },
    "/v1/recordings/{recording_id}": {
        "parameters": [RECORDING_ID],
        "get": op(
            "One recording and its history.",
            (200, "The recording.", "RecordingDetail"),
            "400 403 404",
            tag=R,
        ),
    },
    "/v1/recordings/{recording_id}/stop": {
        "parameters": [RECORDING_ID],
        "post": op(
            "Ask the proxy to stop capturing (repeats are no-ops).",
            (202, "Stop requested.", "StopAccepted"),
            "400 403 404",
            tag=R,
        ),
    },
    "/v1/recordings/{recording_id}/resend": {
        "parameters": [RECORDING_ID],
        "post": op(
            "Send an uploaded or retained recording again (optionally to another destination).",
            (202, "Resend requested.", "ResendAccepted"),
            "400 403 404 409 422",
            body="Resend",
            optional_body=True,
            tag=R,
        ),
    },
    "/v1/retained": {
        "get": op(
            "Retained backups: recordings held because their upload failed, with why and since "
            "when; the filters of GET /v1/recordings but state.",
            (200, "A page.", "RetainedPage"),
            "400 403",
            params=[p for p in RECORDING_FILTERS if p["name"] != "state"],
            tag=R,
        )
    },
    "/v1/usage": {
        "get": op(
            "Backup bytes held per tenant and per day, against its capacity (a warning only: "
            "nothing is ever refused over it).",
            (200, "Usage.", "Usage"),
            "400 403",
            params=[
                q(
                    "days",
                    f"Days of the series, today included (default {DAYS_DEFAULT}).",
                    {"type": "integer", "minimum": 1, "maximum": DAYS_MAX, "default": DAYS_DEFAULT},
                ),
                TENANT,
            ],
            tag=OPS,
        )
    },
    "/v1/audit": {
        "get": op(
            "The audit trail, newest first: the API's entries and the vault's.",
            (200, "A page.", "AuditPage"),
            "400 403",
            params=[LIMIT, CURSOR, q("since", "An ISO 8601 date or date-time."), TENANT],
            tag=OPS,
        )
    },
    "/v1/destinations": {
        "post": op(
            "Add a destination (tested first unless probe is false); its secrets never come back.",
            (201, "Added.", "DestinationView"),
            "400 403 409 413 422 502 504",
            body="CreateDestination",
            tag=D,
        ),
        "get": op("The tenant's destinations.", (200, "Them.", "DestinationList"), "403", tag=D),
    },
    "/v1/destinations/{name}": {
        "parameters": [DESTINATION_NAME],
        "get": op("One destination.", (200, "It.", "DestinationView"), "403 404 422", tag=D),
        "patch": op(
            "Change a destination's non-secret settings (owners, admins, operators).",
            (200, "Changed.", "DestinationView"),
            "403 404 422",
            params=[q("tenant_id", "Operators: the destination's tenant (required for them).")],
            body="SettingsBody",
            tag=D,
        ),
        "delete": op(
            "Delete a destination: this destroys its key.",
            (200, "Deleted.", "DestinationView"),
            "403 404 422",
            tag=D,
        ),
    },
    "/v1/destinations/{name}/test": {
        "parameters": [DESTINATION_NAME],
        "post": op(
            "Test a destination: write, confirm and delete a test object.",
            (200, "It works.", "DestinationTested"),
            "403 404 422 502 504",
            tag=D,
        ),
    },
    "/v1/keys/signing": {
        "get": op("The manifest-signing public key.", (200, "The key.", "SigningKey"), tag="keys")
    },
    "/v1/webhooks": {
        "post": op(
            "Register a webhook endpoint: its signing secret is shown once.",
            (201, "Registered.", "WebhookCreated"),
            "400 403 422",
            body="CreateWebhook",
            tag=W,
        ),
        "get": op("The tenant's webhook endpoints.", (200, "Them.", "WebhookList"), "403", tag=W),
    },
    "/v1/webhooks/deliveries": {
        "get": op(
            "Webhook deliveries, newest first.",
            (200, "Them.", "DeliveryList"),
            "400 403 422",
            params=[
                q("limit", "At most this many (default 100).", {"type": "integer"}),
                q("endpoint_id", "One endpoint's."),
                q("failed", "true: only failed ones.", {"type": "boolean"}),
                q("since", "Queued since (ISO 8601)."),
            ],
            tag=W,
        )
    },
    "/v1/webhooks/redeliver": {
        "post": op(
            "Send deliveries again: one, or every one that gave up since a time.",
            (202, "Requested.", "RedeliveryAccepted"),
            "400 403 404 409 422",
            body="Redeliver",
            tag=W,
        )
    },
    "/v1/webhooks/{endpoint_id}": {
        "parameters": [ENDPOINT_ID],
        "get": op("One endpoint.", (200, "It.", "WebhookOne"), "400 403 404", tag=W),
        "delete": op("Remove an endpoint.", (200, "Removed.", "WebhookOne"), "400 403 404", tag=W),
    },
    "/v1/webhooks/{endpoint_id}/rotate-secret": {
        "parameters": [ENDPOINT_ID],
        "post": op(
            "A new signing secret (shown once); the old one signs too for grace_s seconds.",
            (200, "Rotated.", "WebhookRotated"),
            "400 403 404 422",
            body="RotateWebhookSecret",
            optional_body=True,
            tag=W,
        ),
    },
    "/v1/users": {
        "post": op(
            "Add a dashboard user; without a password, a one-time sign-in link (shown once).",
            (201, "Added.", "UserCreated"),
            "400 403 404 409 422",
            body="CreateUser",
            tag=U,
        ),
        "get": op(
            "The dashboard's users (the admin token: every tenant's, or tenant_id's).",
            (200, "Them.", "UserList"),
            "403 422",
            params=[q("tenant_id", "The admin token only: one tenant's users.")],
            tag=U,
        ),
    },
    "/v1/users/{user_id}": {
        "parameters": [USER_REF],
        "get": op("One user.", (200, "The user.", "UserOne"), "400 403 404", tag=U),
        "delete": op("Remove a user.", (200, "Removed.", "UserOne"), "400 403 404", tag=U),
        "patch": op(
            "Change a user's role.",
            (200, "Changed.", "UserOne"),
            "400 403 404 422",
            body="ChangeRole",
            tag=U,
        ),
    },
    "/v1/users/{user_id}/signin-link": {
        "parameters": [USER_REF],
        "post": op(
            "A new one-time sign-in link for a user (shown once).",
            (201, "Issued.", "UserLink"),
            "400 403 404",
            tag=U,
        ),
    },
}
