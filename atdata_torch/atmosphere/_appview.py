"""The original atdata's AppView support: ``Atmosphere(appview=...)``, XRPC queries and procedures, and search.

An AppView (``https://datasets.atdata.blue`` or ``did:web:datasets.atdata.blue``) indexes ``science.alt.dataset.*``
records. Queries (``GET /xrpc/<nsid>``) go straight to it; procedures (``POST``) go to the account's PDS with an
``atproto-proxy: <appview did>#atdata_appview`` header, so the PDS forwards them with the account's authority. With an
AppView set, every ``science.alt.dataset.*`` record this client writes goes through the matching
``science.alt.dataset.publish*`` procedure, as in the original; a refusal is an error, never a silent fallback.

Every failure is an :class:`~atdata_torch.errors.AppViewError`: no AppView configured
(:class:`~atdata_torch.errors.AppViewRequiredError`), or an AppView that is unreachable or does not answer the method
(:class:`~atdata_torch.errors.AppViewUnavailableError`, with the server's XRPC error and the fix).

Example:
    >>> did_web_to_url("did:web:localhost%3A8000"), url_to_did_web("https://datasets.atdata.blue")
    ('https://localhost:8000', 'did:web:datasets.atdata.blue')
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlparse

from ..errors import AppViewRequiredError, AppViewUnavailableError, AuthError, ConfigError
from ._lex_base import NS

if TYPE_CHECKING:
    from ._xrpc import XrpcRepo

__all__ = [
    "DESCRIBE_SERVICE",
    "PUBLISH_PROCEDURES",
    "SEARCH_DATASETS",
    "AppViewMixin",
    "dataset_search_params",
    "did_web_to_url",
    "url_to_did_web",
]

A = TypeVar("A", bound="AppViewMixin")

#: The AppView procedure that publishes each record collection (the original's ``_publish_via_appview`` routes).
PUBLISH_PROCEDURES = {
    f"{NS}.schema": f"{NS}.publishSchema",
    f"{NS}.entry": f"{NS}.publishDataset",
    f"{NS}.label": f"{NS}.publishLabel",
    f"{NS}.lens": f"{NS}.publishLens",
    f"{NS}.lensVerification": f"{NS}.publishLensVerification",
}
_FIX = (
    "check that appview= names an atdata AppView (e.g. https://datasets.atdata.blue) that implements {nsid}, or "
    "drop appview= to read and write straight from the PDS"
)


def did_web_to_url(did: str) -> str:
    """The https URL of a ``did:web`` DID (``%3A`` is the port's colon)."""
    return f"https://{unquote(did[len('did:web:') :])}"


def url_to_did_web(url: str) -> str:
    """The ``did:web`` DID of an http(s) URL."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    return f"did:web:{host}%3A{parsed.port}" if parsed.port else f"did:web:{quote(host, safe='.')}"


def _httpx() -> Any:
    from ._identity import _atproto

    _atproto()  # httpx comes with the atmosphere extra; its absence is reported as that extra's
    import httpx

    return httpx


SEARCH_DATASETS = f"{NS}.searchDatasets"
DESCRIBE_SERVICE = f"{NS}.describeService"


def dataset_search_params(
    q: str | None,
    *,
    tags: list[str] | None = None,
    schema_ref: str | None = None,
    repo: str | None = None,
    limit: int = 25,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The query parameters of ``science.alt.dataset.searchDatasets`` (``limit`` capped at the AppView's 100).

    Example:
        >>> dataset_search_params("mnist", tags=["vision"], limit=500)
        {'limit': 100, 'q': 'mnist', 'tags': ['vision']}
    """
    params: dict[str, Any] = {"limit": min(limit, 100)}
    for key, value in (("q", q), ("tags", tags), ("schemaRef", schema_ref), ("repo", repo), ("cursor", cursor)):
        if value is not None:
            params[key] = value
    return params


class AppViewMixin:
    """The AppView half of :class:`~atdata_torch.atmosphere.Atmosphere` (the original's API, same names)."""

    xrpc: XrpcRepo
    _appview_url: str | None = None
    _appview_did: str | None = None

    def configure_appview(self, appview: str | None) -> None:
        """Use ``appview`` (an http(s) URL or a ``did:web`` DID; ``None``: none) for queries and publishing.

        Raises:
            ConfigError: (also a ``ValueError``) ``appview`` is neither a URL nor a ``did:web`` DID.
        """
        if appview is None:
            self._appview_url = self._appview_did = None
            self.xrpc.route = None
            return
        if appview.startswith("did:web:"):
            self._appview_did, self._appview_url = appview, did_web_to_url(appview)
        elif appview.startswith(("https://", "http://")):
            self._appview_url = appview.rstrip("/")
            self._appview_did = url_to_did_web(self._appview_url)
        else:
            raise ConfigError(
                f"appview={appview!r}: expected an https:// URL or a did:web: DID (did:web:datasets.atdata.blue)"
            )
        self.xrpc.route = self._route

    @property
    def has_appview(self) -> bool:
        """Whether an AppView is configured."""
        return self._appview_url is not None

    @property
    def appview_url(self) -> str | None:
        """The AppView's base URL, or ``None``."""
        return self._appview_url

    @property
    def appview_did(self) -> str | None:
        """The AppView's DID (``did:web:...``), or ``None``."""
        return self._appview_did

    @classmethod
    def from_env(cls: type[A], *, base_url: str | None = None) -> A:
        """Log in from ``$ATDATA_HANDLE``, ``$ATDATA_PASSWORD``, ``$ATDATA_PDS_URL`` (else ``base_url``) and
        ``$ATDATA_APPVIEW`` (optional).

        Raises:
            AuthError: (also an ``OSError``, as the original's ``EnvironmentError``) the handle or password is unset.
        """
        handle, password = os.environ.get("ATDATA_HANDLE"), os.environ.get("ATDATA_PASSWORD")
        if not handle or not password:
            raise AuthError("Atmosphere.from_env needs the environment variables ATDATA_HANDLE and ATDATA_PASSWORD")
        pds = os.environ.get("ATDATA_PDS_URL", base_url)
        login: Any = cls.login  # type: ignore[attr-defined]
        out: A = login(handle, password, pds=pds, appview=os.environ.get("ATDATA_APPVIEW"))
        return out

    # ------------------------------------------------------------------------------------------------ transport
    def _answer(self, nsid: str, send: Any) -> dict[str, Any]:
        httpx = _httpx()
        url = str(self._appview_url)
        try:
            resp = send(httpx)
        except httpx.HTTPError as exc:
            raise AppViewUnavailableError(
                url, f"{nsid}: {type(exc).__name__}: {exc}; {_FIX.format(nsid=nsid)}"
            ) from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
                said = f"{body.get('error', '')}: {body.get('message', '')}"
            except ValueError:
                said = resp.text[:200]
            reason = f"{nsid} answered HTTP {resp.status_code} ({said}); {_FIX.format(nsid=nsid)}"
            raise AppViewUnavailableError(url, reason)
        try:
            out = resp.json()
        except ValueError:
            raise AppViewUnavailableError(url, f"{nsid} answered with no JSON body; {_FIX.format(nsid=nsid)}") from None
        if not isinstance(out, dict):
            raise AppViewUnavailableError(url, f"{nsid} answered {type(out).__name__}, not a JSON object")
        return out

    def xrpc_query(self, nsid: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """``GET {appview}/xrpc/{nsid}`` (public, no login); the JSON answer.

        Raises:
            AppViewRequiredError: no AppView is configured.
            AppViewUnavailableError: unreachable, or an error answer (its XRPC error is in the message).
        """
        if not self.has_appview:
            raise AppViewRequiredError(nsid)
        url = f"{self._appview_url}/xrpc/{nsid}"
        timeout = self.xrpc.timeout
        return self._answer(nsid, lambda httpx: httpx.get(url, params=params or {}, timeout=timeout))

    def xrpc_procedure(self, nsid: str, input: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST`` ``nsid`` to the account's PDS, proxied to the AppView (``atproto-proxy``); the JSON answer.

        Raises:
            AppViewRequiredError: no AppView is configured.
            AuthError: anonymous.
            AppViewUnavailableError: unreachable, or an error answer (e.g. the PDS cannot resolve the AppView DID).
        """
        if not self.has_appview:
            raise AppViewRequiredError(nsid)
        client, _ = self.xrpc.account()
        session = getattr(client, "_session", None)
        token = getattr(session, "access_jwt", None)
        headers = {"atproto-proxy": f"{self._appview_did}#atdata_appview"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{str(self.xrpc.pds).rstrip('/')}/xrpc/{nsid}"
        timeout = self.xrpc.timeout
        return self._answer(nsid, lambda httpx: httpx.post(url, json=input or {}, headers=headers, timeout=timeout))

    def _route(self, collection: str, record: dict[str, Any]) -> str | None:
        """The at-uri of ``record`` published through the AppView procedure of its collection (``None``: not one)."""
        nsid = PUBLISH_PROCEDURES.get(collection)
        if nsid is None:
            return None
        out = self.xrpc_procedure(nsid, input={"record": record})
        uri = out.get("uri")
        if not isinstance(uri, str):
            raise AppViewUnavailableError(str(self._appview_url), f"{nsid} answered without a 'uri': {sorted(out)}")
        return uri

    # ------------------------------------------------------------------------------------------------ AppView-only
    def search_datasets(
        self,
        q: str,
        *,
        tags: list[str] | None = None,
        schema_ref: str | None = None,
        repo: str | None = None,
        limit: int = 25,
    ) -> list[dict[str, Any]]:
        """Full-text dataset search (``science.alt.dataset.searchDatasets``); the ``entries`` of the answer.

        Raises:
            AppViewRequiredError: no AppView is configured.
        """
        params = dataset_search_params(q, tags=tags, schema_ref=schema_ref, repo=repo, limit=limit)
        return list(self.xrpc_query(SEARCH_DATASETS, params=params).get("entries", []))

    def search_lenses(
        self, *, source_schema: str | None = None, target_schema: str | None = None, limit: int = 25
    ) -> list[dict[str, Any]]:
        """Lenses by source and/or target schema (``science.alt.dataset.searchLenses``); the ``lenses``.

        Raises:
            AppViewRequiredError: no AppView is configured.
        """
        params: dict[str, Any] = {"limit": min(limit, 100)}
        for key, value in (("sourceSchema", source_schema), ("targetSchema", target_schema)):
            if value is not None:
                params[key] = value
        return list(self.xrpc_query(f"{NS}.searchLenses", params=params).get("lenses", []))

    def describe_service(self) -> dict[str, Any]:
        """The AppView's description (``did``, ``availableCollections``, ``recordCount``, ``analytics``)."""
        return self.xrpc_query(DESCRIBE_SERVICE)

    def get_entries(self, uris: list[str]) -> list[dict[str, Any]]:
        """Up to 25 dataset entries in one call (``science.alt.dataset.getEntries``).

        Raises:
            AppViewRequiredError: no AppView is configured.
            ConfigError: (also a ``ValueError``) more than 25 URIs.
            AppViewUnavailableError: the AppView failed.
        """
        if len(uris) > 25:
            raise ConfigError(
                f"get_entries takes at most 25 URIs per call (the method's limit), got {len(uris)}; split the list"
            )
        return list(self.xrpc_query(f"{NS}.getEntries", params={"uris": uris}).get("entries", []))

    def get_entry_stats(self, uri: str, period: str = "week") -> dict[str, Any]:
        """View and search statistics of an entry (``views``, ``searchAppearances``, ``period``)."""
        return self.xrpc_query(f"{NS}.getEntryStats", params={"uri": uri, "period": period})
