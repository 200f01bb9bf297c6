"""Logging in to a PDS: a password login, or a saved session resumed; the account's PDS from its DID document.

Both return a logged-in ``atproto.Client`` and what the facade needs around it; the caller builds the
:class:`~atdata_torch.atmosphere.Atmosphere`. Passwords and tokens never appear in messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ..errors import AuthError, PublishError
from ._identity import Identity, _atproto, is_did, normalize_handle
from ._xrpc import error_status

__all__ = ["Login", "password_login", "resume_session"]


class Login(NamedTuple):
    """A logged-in SDK client and the account it is logged in as."""

    identity: Identity
    client: Any
    did: str
    handle: str
    pds: str


def password_login(
    handle: str, password: str, *, pds: str | None = None, plc: str | None = None, timeout: float = 30.0
) -> Login:
    """Resolve ``handle`` (or a DID) to its PDS and log in there with ``password``.

    Raises:
        AuthError: wrong handle or password.
        IdentityError: the handle or DID does not resolve.
        PublishError: the PDS did not answer the login.
    """
    atproto = _atproto()
    ids = Identity(plc=plc, pds=pds, timeout=timeout)
    try:
        did = ids.resolve_handle(handle)
        endpoint = ids.pds_of(did)
    except BaseException:
        ids.close()
        raise
    client = atproto.Client(base_url=endpoint, request=atproto.Request(timeout=timeout))
    who = handle if is_did(handle) else normalize_handle(handle)
    try:
        client.login(who, password, fetch_bsky_profile=False)
    except atproto.exceptions.AtProtocolError as exc:
        status, error, message = error_status(exc)
        client.request.close()
        ids.close()
        if status in (400, 401):
            raise AuthError(
                f"login as {who} on {endpoint} failed: {message or error or 'invalid identifier or password'} "
                f"(HTTP {status}); check the handle and password (an app password works too)"
            ) from None
        raise PublishError(
            f"login as {who} on {endpoint} failed ({type(exc).__name__}, HTTP {status}); is the PDS reachable?"
        ) from None
    sess_handle = client._session.handle if client._session is not None else who
    return Login(ids, client, did, str(sess_handle), endpoint)


def resume_session(client: Any, data: dict[str, Any], path: Path) -> None:
    """Log ``client`` in with the session string of a saved session (``data``, read from ``path``).

    Raises:
        AuthError: the PDS no longer accepts the session (log in again).
    """
    atproto = _atproto()
    try:
        client.login(session_string=str(data["session"]), fetch_bsky_profile=False)
    except atproto.exceptions.AtProtocolError as exc:
        status, error, message = error_status(exc)
        raise AuthError(
            f"the saved session of {data.get('handle')} ({path}) was refused: {message or error} (HTTP {status}); "
            "log in again"
        ) from None
