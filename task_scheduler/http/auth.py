"""Who a request is: the legacy token, an API token, the single sign-on header of a trusted
proxy, or (nothing configured, no user yet) the local user of a loopback install. The guard
asks ``identify`` once per request and checks the route's role with ``check_role``."""

from __future__ import annotations

import hmac
from typing import Optional

from ..access import OPEN, allows, refuse
from ..errors import SchedulerError, Unauthorized
from ..models import Actor


class TooManyRequests(SchedulerError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def identify(request, access, failures, client: str, peer_trusted: bool,
             bearer: bool = True) -> Optional[Actor]:
    """The request's actor; None when it brings no credentials and some are required. Wrong
    credentials count against the client (429 past the limit) and answer 401. Without
    ``bearer`` (the GUI's pages: their own login) an Authorization header is not read."""
    given = request.get_header("Authorization", "") if bearer else ""
    if given:
        actor = _bearer(given, access, client)
        if actor is not None:
            return actor
        if not access.required():   # nothing to check against: as before users existed
            return Actor("local", "local", "admin", address=client)
        wait = failures.failed(client)
        if wait:
            raise TooManyRequests(f"too many wrong tokens from {client}; try again in {wait}s",
                                  retry_after=wait)
        raise Unauthorized("missing or wrong token: send 'Authorization: Bearer <token>'")
    header = access.config.auth_header
    name = request.get_header(header) if header and peer_trusted else None
    if name:
        actor = access.user_actor(name.strip(), "sso", client)
        if actor is None:
            raise Unauthorized(f"user {name.strip()[:64]!r} from the {header} header is "
                               f"disabled or unknown here (--auth-header-default-role none)")
        return actor
    if not access.required():
        return Actor("local", "local", "admin", address=client)
    return None


def _bearer(given: str, access, client: str) -> Optional[Actor]:
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    value = value.strip()
    legacy = access.config.token
    # Header values arrive as latin-1 text: back to their bytes, compared in constant time.
    if legacy and hmac.compare_digest(value.encode("latin-1", "replace"), legacy.encode()):
        return Actor("token", "legacy", "admin", address=client)
    return access.token_actor(value, client)


def check_role(actor: Optional[Actor], needed: str, what: str) -> None:
    """Refuse (401 without credentials, 403 with too small a role) unless ``needed`` is met."""
    if needed == OPEN:
        return
    if actor is None:
        raise Unauthorized("missing or wrong token: send 'Authorization: Bearer <token>'")
    if not allows(actor.role, needed):
        raise refuse(what, needed, actor)
