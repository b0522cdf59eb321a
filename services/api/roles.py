"""Who may do what: one table, checked on the server for every page and every API call. Pure.

Principals come from an API token (``admin``: the system's admin token, which manages tenants;
``tenant``: a tenant's API token, with every right in its tenant) or from a dashboard user's
session (``owner``, ``admin``, ``member`` of one tenant; ``operator``: our own staff, across
tenants, without secrets, media or participants' names).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.Enum):
    VIEW_RECORDINGS = "view recordings"
    VIEW_FILES = "view files, hashes and remote locations"
    VIEW_PARTICIPANTS = "view participants' names"
    VIEW_AUDIT = "view the audit trail"
    VIEW_USAGE = "view backup usage"
    VIEW_HEALTH = "view the system's health"
    RESEND = "re-send a recording"
    START_RECORDING = "start and stop recordings"
    VIEW_DESTINATIONS = "view destinations"
    MANAGE_DESTINATIONS = "add, test and delete destinations"
    EDIT_DESTINATION_SETTINGS = "change a destination's non-secret settings"
    MANAGE_USERS = "manage users"
    MANAGE_WEBHOOKS = "manage webhooks"
    MANAGE_TENANTS = "manage tenants"
    ACROSS_TENANTS = "see every tenant"


A = Action
_TENANT_ALL = frozenset(a for a in Action if a not in (A.MANAGE_TENANTS, A.ACROSS_TENANTS))

RIGHTS: dict[str, frozenset[Action]] = {
    # API tokens
    "tenant": _TENANT_ALL,
    "admin": frozenset({A.MANAGE_TENANTS}),
    # dashboard users
    "owner": _TENANT_ALL,
    "admin_user": _TENANT_ALL,  # a tenant's "admin" user (the token role "admin" is another)
    "member": frozenset(
        {A.VIEW_RECORDINGS, A.VIEW_FILES, A.VIEW_PARTICIPANTS, A.VIEW_AUDIT, A.VIEW_USAGE, A.RESEND}
    ),
    "operator": frozenset(
        {
            A.VIEW_RECORDINGS,
            A.VIEW_AUDIT,
            A.VIEW_USAGE,
            A.VIEW_HEALTH,
            A.RESEND,
            A.VIEW_DESTINATIONS,
            A.EDIT_DESTINATION_SETTINGS,
            A.ACROSS_TENANTS,
        }
    ),
}
USER_ROLES = ("owner", "admin", "member", "operator")


@dataclass(frozen=True)
class Principal:
    """Who is asking. ``role`` is a token role ("admin", "tenant") for token callers, a user role
    (one of ``USER_ROLES``) for dashboard users; ``tenant_id`` is None for the admin token and
    for operators (who see every tenant)."""

    role: str
    tenant_id: str | None
    user_id: str = ""  # set for dashboard users
    email: str = ""
    via: str = "token"  # "token" or "session"

    @property
    def rights_key(self) -> str:
        return "admin_user" if self.via == "session" and self.role == "admin" else self.role

    @property
    def who(self) -> str:
        """What the audit trail names: the user's email, or which kind of token."""
        return self.email or f"{self.role} token"


def can(principal: Principal, action: Action) -> bool:
    return action in RIGHTS.get(principal.rights_key, frozenset())
