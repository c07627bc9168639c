"""The API of people: ``/api/whoami``, ``/api/users`` (admin) and ``/api/tokens`` (your own;
anyone's for an admin). The handlers read the caller from ``environ["ts.actor"]``, which the
guard sets; the rules and the rows are access.py's."""

from __future__ import annotations

import dataclasses

import bottle

from ..access import allows, refuse
from ..errors import BadRequest
from ..models import Actor
from .io import _json_body, _json_response


def api_whoami(service):
    """Who this request is: name, kind (user, legacy, sso, local), role, the token used."""
    return dataclasses.asdict(_actor())


def api_list_users(service):
    """Every user: name, role, disabled, created_at, updated_at (never a password hash)."""
    return {"users": _access().list_users()}


def api_create_user(service):
    """Add a user: ``{"name", "role", "password"}`` (no password: API tokens or SSO only)."""
    body = _object(("name", "role", "password"))
    return 201, _access().add_user(body.get("name"), body.get("role"), body.get("password"))


def api_update_user(service, user_name):
    """Change a user's ``role``, ``password`` or ``disabled``; effective at once on every node."""
    body = _object(("role", "password", "disabled"))
    return _access().update_user(user_name, **body)


def api_delete_user(service, user_name):
    """Delete a user with their tokens and GUI sessions."""
    _access().delete_user(user_name)
    return 204, None


def api_list_tokens(service):
    """API tokens (never the secrets): yours; an admin sees everyone's or ``?user=NAME``'s."""
    actor, user = _actor(), bottle.request.query.getunicode("user") or None
    if user != actor.name and not allows(actor.role, "admin"):
        if user is not None:
            raise refuse("the tokens of another user", "admin", actor)
        user = actor.name
    return {"tokens": _access().list_tokens(user)}


def api_create_token(service):
    """Create an API token (the answer is the only time its secret is shown).

    Body: ``{"name", "expires" (e.g. "90d"), "user" (an admin: someone else's)}``."""
    body, actor = _object(("name", "expires", "user")), _actor()
    user = body.get("user") or actor.name
    _own_or_admin(actor, user)
    answer = _json_response(201, _access().create_token(user, body.get("name"),
                                                        body.get("expires")))
    answer.set_header("Cache-Control", "no-store")
    return answer


def api_revoke_token(service, token_id):
    """Revoke a token (yours; an admin: anyone's): refused from the next request, every node."""
    access = _access()
    _own_or_admin(_actor(), access.token(token_id)["user_name"])
    access.revoke_token(token_id)
    return 204, None


def _own_or_admin(actor: Actor, user: str) -> None:
    if user != actor.name and not allows(actor.role, "admin"):
        raise refuse("the tokens of another user", "admin", actor)


def _object(fields: tuple) -> dict:
    body = _json_body()
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; known: {', '.join(fields)}")
    return body


def _actor() -> Actor:
    return bottle.request.environ["ts.actor"]


def _access():
    return bottle.request.app.config["ts.access"]
