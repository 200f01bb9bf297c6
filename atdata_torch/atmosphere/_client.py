"""``Atmosphere``: publish and discover schemas, datasets, labels and lenses on any AT Protocol PDS.

Logged in, it writes records to the account's own repo; anonymous (:meth:`Atmosphere.anonymous`), it reads anyone's.
Every read of another repo goes to the PDS its DID document names (never a hard-wired host), and lists page through
``listRecords`` 100 records at a time.

A thin facade: the XRPC calls (records, blobs, retries, session refresh) belong to
:class:`~atdata_torch.atmosphere.XrpcRepo` (the :attr:`Atmosphere.xrpc` attribute), and each record kind has its
module (``_schemas``, ``_datasets``, ``_lenses``, ``_search``, ``_load``) built on that layer's public methods.

Example (against a PDS; see ``tests/test_atmosphere.py`` for the real-network tests)::

    from atdata_torch.atmosphere import Atmosphere, CodeRef
    atmo = Atmosphere.login("alice.test", "alice-pass", pds="http://localhost:2583")
    schema_uri = atmo.publish_schema(ImageSample)             # reuses an identical published schema
    entry_uri = atmo.publish_dataset(ds, name="digits", storage="blobs")
    atmo.label("digits", entry_uri, version="1.0.0")
    atd.load_dataset("@alice.test/digits@1.0.0", split="train")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..dataset import Dataset
from ..errors import AuthError
from ..lens import Lens
from ..load import DatasetDict
from ._appview import AppViewMixin
from ._auth import password_login, resume_session
from ._datasets import get_dataset, label, list_datasets, list_labels, parse_name, publish_dataset
from ._identity import Identity, _atproto
from ._lenses import find_lenses, load_lens, publish_lens
from ._lexicon import CodeRef, DatasetRecord, LabelRecord, LensRecord, SchemaRecord
from ._load import load_entry
from ._schemas import get_schema, list_schemas, publish_schema, schema_type
from ._search import search
from ._session import default_session_path, load_session, save_session
from ._xrpc import MAX_RECORD_BYTES, PAGE, XrpcAttr, XrpcRepo

__all__ = ["MAX_RECORD_BYTES", "PAGE", "Atmosphere", "parse_name"]


class Atmosphere(AppViewMixin):
    """A connection to the AT Protocol network: a logged-in account (writes) or anonymous (reads).

    Build it with :meth:`login`, :meth:`from_session` or :meth:`anonymous`.

    Args:
        identity: Resolves handles and DIDs (PLC / did:web / a PDS).
        client: A logged-in ``atproto.Client``, or ``None`` for read-only use.
        did: The logged-in account's DID.
        handle: The logged-in account's handle.
        pds: The logged-in account's PDS endpoint.
        session_file: Where refreshed tokens are saved (``None``: not saved).
        max_blob_bytes: The PDS's blob size limit when known (checked before anything is uploaded).
        timeout: Seconds per request.
        appview: An AppView URL or ``did:web`` DID: queries, search and publishing go through it (``_appview``).
    """

    def __init__(
        self,
        identity: Identity,
        client: Any = None,
        *,
        did: str | None = None,
        handle: str | None = None,
        pds: str | None = None,
        session_file: str | os.PathLike[str] | None = None,
        max_blob_bytes: int | None = None,
        timeout: float = 30.0,
        appview: str | None = None,
    ) -> None:
        self.xrpc = XrpcRepo(
            identity, client, did=did, handle=handle, pds=pds, max_blob_bytes=max_blob_bytes, timeout=timeout
        )
        self.configure_appview(appview)
        self.session_file = Path(session_file).expanduser() if session_file is not None else None
        if client is not None and self.session_file is not None:
            client.on_session_change(lambda _event, _session: self._persist())

    #: The account's state lives on :attr:`xrpc` (read and written through): resolver, DID, handle, PDS, limits.
    identity: XrpcAttr[Identity] = XrpcAttr()
    did: XrpcAttr[str | None] = XrpcAttr()
    handle: XrpcAttr[str | None] = XrpcAttr()
    pds: XrpcAttr[str | None] = XrpcAttr()
    max_blob_bytes: XrpcAttr[int | None] = XrpcAttr()
    timeout: XrpcAttr[float] = XrpcAttr()

    # ================================================================================================ sessions
    @classmethod
    def login(
        cls,
        handle: str | None = None,
        password: str | None = None,
        *,
        pds: str | None = None,
        plc: str | None = None,
        save_session: bool = False,
        session_file: str | os.PathLike[str] | None = None,
        max_blob_bytes: int | None = None,
        timeout: float = 30.0,
        appview: str | None = None,
    ) -> Atmosphere:
        """Log in with a handle (or DID) and a password (an app password is best).

        Without ``handle``/``password`` they come from ``$ATDATA_HANDLE`` / ``$ATDATA_PASSWORD``; without those,
        the saved session is used (:meth:`from_session`).

        Args:
            handle: ``alice.bsky.social``, ``alice.test`` or a DID.
            password: The account's (app) password; never logged or shown.
            pds: A PDS to resolve the handle on (also ``$ATDATA_PDS_URL``); the account's own PDS always comes
                from its DID document.
            plc: The PLC directory (``$ATDATA_PLC_URL``, else https://plc.directory).
            save_session: Save the session (owner-only file) so later runs need no password.
            session_file: Where to save it (default: :func:`default_session_path`).
            max_blob_bytes: The PDS's blob limit, when known.
            timeout: Seconds per request.
            appview: An AppView URL or ``did:web`` DID (the original's ``appview=``; see ``AppViewMixin``).

        Raises:
            AuthError: wrong handle or password, or nothing to log in with.
            IdentityError: the handle or DID does not resolve.
            MissingDependencyError: the ``atmosphere`` extra is not installed.
        """
        handle = handle or os.environ.get("ATDATA_HANDLE")
        password = password or os.environ.get("ATDATA_PASSWORD")
        if not handle or not password:
            if handle is None and password is None:
                path = session_file or default_session_path()
                if Path(path).expanduser().exists():
                    return cls.from_session(
                        path, plc=plc, pds=pds, max_blob_bytes=max_blob_bytes, timeout=timeout, appview=appview
                    )
            raise AuthError(
                "Atmosphere.login needs a handle and a password (or ATDATA_HANDLE / ATDATA_PASSWORD, or a saved "
                "session from `atdata-torch login`)"
            )
        who = password_login(handle, password, pds=pds, plc=plc, timeout=timeout)
        atmo = cls(
            who.identity,
            who.client,
            did=who.did,
            handle=who.handle,
            pds=who.pds,
            session_file=(session_file or default_session_path()) if save_session or session_file else None,
            max_blob_bytes=max_blob_bytes,
            timeout=timeout,
            appview=appview,
        )
        atmo._persist()
        return atmo

    @classmethod
    def from_session(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        plc: str | None = None,
        pds: str | None = None,
        max_blob_bytes: int | None = None,
        timeout: float = 30.0,
        appview: str | None = None,
    ) -> Atmosphere:
        """Resume a saved session (tokens are refreshed when the access token has expired, and saved again).

        Raises:
            AuthError: no session file, an unsafe one, or a session the PDS no longer accepts (log in again).
        """
        p = Path(path).expanduser() if path is not None else default_session_path()
        data = load_session(p)
        atproto = _atproto()
        ids = Identity(plc=plc or data.get("plc"), pds=pds, timeout=timeout)
        endpoint = str(data.get("pds") or "")
        client = atproto.Client(base_url=endpoint or None, request=atproto.Request(timeout=timeout))
        atmo = cls(
            ids,
            client,
            did=data.get("did"),
            handle=data.get("handle"),
            pds=endpoint,
            session_file=p,
            max_blob_bytes=max_blob_bytes,
            timeout=timeout,
            appview=appview,
        )
        try:
            resume_session(client, data, p)
        except AuthError:
            atmo.close()
            raise
        return atmo

    @classmethod
    def anonymous(
        cls, *, pds: str | None = None, plc: str | None = None, timeout: float = 30.0, appview: str | None = None
    ) -> Atmosphere:
        """Read-only access: resolve, list, search and load anyone's records; no login.

        Args:
            pds: A PDS for handle resolution and :meth:`search` (``$ATDATA_PDS_URL``).
            plc: The PLC directory (``$ATDATA_PLC_URL``, else https://plc.directory).
            timeout: Seconds per request.
        """
        _atproto()
        return cls(Identity(plc=plc, pds=pds, timeout=timeout), None, timeout=timeout, appview=appview)

    def _persist(self) -> None:
        client = self.xrpc.client
        if self.session_file is None or client is None:
            return
        data = {
            "handle": self.handle,
            "did": self.did,
            "pds": self.pds,
            "plc": self.identity.plc_url,
            "session": client.export_session_string(),
        }
        save_session(self.session_file, data)

    def save_session(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save this session (mode 0600); later refreshes of the tokens are saved there too. Returns the path."""
        client = self.xrpc.client
        if client is None:
            raise AuthError("an anonymous Atmosphere has no session to save; log in first")
        p = Path(path).expanduser() if path is not None else default_session_path()
        if self.session_file is None:
            client.on_session_change(lambda _event, _session: self._persist())
        self.session_file = p
        self._persist()
        return p

    def close(self) -> None:
        """Close the HTTP connections."""
        self.xrpc.close()

    def __enter__(self) -> Atmosphere:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.xrpc.client is None:
            return f"Atmosphere(anonymous, plc={self.identity.plc_url!r})"
        return f"Atmosphere(handle={self.handle!r}, did={self.did!r}, pds={self.pds!r})"

    # ================================================================================================ records
    def resolve(self, repo: str | None) -> str:
        """The DID of a repo given as handle or DID (``None``: the logged-in account).

        Raises:
            IdentityError: it does not resolve.
        """
        return self.xrpc.resolve(repo)

    def create_record(self, collection: str, record: dict[str, Any], *, repo: str | None = None) -> str:
        """Write a record to the logged-in account's repo; returns its at-uri.

        Raises:
            AuthError: anonymous, or ``repo`` is another account's.
            PublishError: the PDS refused the record (e.g. floats, too large).
        """
        return self.xrpc.create_record(collection, record, repo=repo)

    def get_record(self, uri: str) -> tuple[str, dict[str, Any]]:
        """``(uri with a DID, record)`` of an at-uri (its repo may be a handle).

        Raises:
            RecordNotFoundError: no such record.
        """
        return self.xrpc.get_record(uri)

    def list_records(self, collection: str, *, repo: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every record of a collection in a repo, paging through ``listRecords`` (100 per page)."""
        return self.xrpc.list_records(collection, repo=repo)

    # ================================================================================================ schemas
    def list_schemas(self, repo: str | None = None) -> list[SchemaRecord]:
        """The schema records of a repo (either namespace)."""
        return list_schemas(self.xrpc, repo)

    def publish_schema(
        self,
        sample_type: type,
        *,
        version: str | None = None,
        description: str | None = None,
        license: str | None = None,
        tags: list[str] | None = None,
    ) -> str:
        """Publish the schema of a ``@packable`` class, or reuse an identical one already in the repo.

        Args:
            sample_type: The ``@packable`` class.
            version: The schema version; ``None`` reuses an identical published schema of that name, else
                publishes the next patch version (``1.0.0`` first).
            description: Defaults to the class docstring.
            license: Stored in ``metadata.license``.
            tags: Stored in ``metadata.tags``.

        Returns:
            The schema record's at-uri.

        Raises:
            SchemaError: not ``@packable``, or ``name@version`` is published with different fields.
        """
        return publish_schema(
            self.xrpc, sample_type, version=version, description=description, license=license, tags=tags
        )

    def get_schema(self, uri: str) -> SchemaRecord:
        """A schema record by at-uri."""
        return get_schema(self.xrpc, uri)

    def schema_type(self, uri: str) -> type:
        """The ``@packable`` class a published schema describes (rebuilt from data; no code runs)."""
        return schema_type(self.xrpc, uri)

    # ================================================================================================ datasets
    def publish_dataset(
        self,
        ds: Dataset[Any] | str | list[str],
        *,
        name: str,
        storage: str | None = None,
        sample_type: type | None = None,
        schema_uri: str | None = None,
        version: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        progress: bool | None = None,
    ) -> str:
        """Publish a dataset entry (and its schema, reused when identical).

        Args:
            ds: A ``Dataset`` (or shard URLs with ``sample_type``).
            name: The dataset name.
            storage: ``"blobs"`` (upload each shard to the PDS as it is, ``application/x-tar``, with its sha256 and
                its index sidecar), ``"http"`` (the shards' https URLs) or ``"s3"`` (their ``s3://bucket/key``);
                ``None``: blobs for local shards, else what the URLs are.
            sample_type: The sample class when ``ds`` is not a typed ``Dataset``.
            schema_uri: Use this published schema instead of publishing ``sample_type``'s.
            version: Also label the entry ``name@version``.
            description: Text.
            tags: Tags (used by :meth:`search`).
            license: An SPDX id or URL.
            metadata: Extra metadata (no floats: a PDS refuses them).
            endpoint: For ``storage="s3"``: the S3 endpoint to record (default: the dataset's source's).
            region: For ``storage="s3"``: the region to record.
            progress: tqdm bar while uploading (``None``: only on a terminal).

        Returns:
            The entry's at-uri.

        Raises:
            PublishError: a local file path would end up in the record, shards of mixed kinds, a float in
                ``metadata``, or the record is too large.
            BlobLimitError: a shard is larger than the PDS's blob limit.
            SchemaError: the samples are not typed and no ``schema_uri`` is given.
        """
        return publish_dataset(
            self.xrpc,
            ds,
            name=name,
            storage=storage,
            sample_type=sample_type,
            schema_uri=schema_uri,
            version=version,
            description=description,
            tags=tags,
            license=license,
            metadata=metadata,
            endpoint=endpoint,
            region=region,
            progress=progress,
        )

    def list_datasets(self, repo: str | None = None) -> list[DatasetRecord]:
        """The dataset entries of a repo (either namespace), newest first."""
        return list_datasets(self.xrpc, repo)

    def get_dataset(self, ref: str) -> DatasetRecord:
        """A dataset entry by at-uri (an entry, or a label that points at one) or ``@handle/name[@version]``.

        Without a version, the newest label of the name wins, else the newest entry of that name.

        Raises:
            RecordNotFoundError: nothing by that name (the message lists the repo's datasets) or version.
        """
        return get_dataset(self.xrpc, ref)

    def load(
        self, ref: str, sample_type: type | None = None, *, split: str | None = None, **source_options: Any
    ) -> Dataset[Any] | DatasetDict:
        """A published dataset, as ``load_dataset`` returns it (blob checksums verified on download).

        Args:
            ref: An at-uri (entry or label) or ``@handle/name[@version]``.
            sample_type: The sample class; default: rebuilt from the entry's schema record.
            split: ``None`` for a ``DatasetDict`` of the splits the shard names show (``train`` by default), or a
                split expression.
            **source_options: Passed to the sources (``cache_dir=``, ``retries=``, S3 credentials, ...).
        """
        return load_entry(self.xrpc, self.get_dataset(ref), sample_type, split=split, **source_options)

    # ================================================================================================ labels
    def label(self, name: str, dataset_uri: str, *, version: str | None = None, description: str | None = None) -> str:
        """Point ``name`` (``name@version``) at a dataset entry; returns the label's at-uri.

        Raises:
            RecordNotFoundError: ``dataset_uri`` is not a dataset entry.
        """
        return label(self.xrpc, name, dataset_uri, version=version, description=description)

    def list_labels(self, repo: str | None = None) -> list[LabelRecord]:
        """The label records of a repo (either namespace)."""
        return list_labels(self.xrpc, repo)

    # ================================================================================================ lenses
    def publish_lens(
        self,
        lens: Lens[Any, Any],
        *,
        code: CodeRef,
        putter_code: CodeRef | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> str:
        """Publish a lens as code references (a record never carries code) and its two schemas.

        Args:
            lens: The lens (its source and view types must be ``@packable``).
            code: Where the lens lives: repository, exact commit, ``module:qualname`` of the ``Lens`` object (or
                of its getter function).
            putter_code: Where the putter lives, when it is a separate function (default: ``code``).
            name: The lens name (default: the lens's).
            description: Text.
        """
        return publish_lens(self.xrpc, lens, code=code, putter_code=putter_code, name=name, description=description)

    def find_lenses(
        self, *, source: type | str | None = None, target: type | str | None = None, repo: str | None = None
    ) -> list[LensRecord]:
        """Lens records of a repo, optionally only those from / to a schema (a class, its name, or an at-uri)."""
        return find_lenses(self.xrpc, source=source, target=target, repo=repo)

    def load_lens(self, lens: LensRecord | str, *, allow: Iterable[str] = (), register: bool = False) -> Lens[Any, Any]:
        """Turn a lens record into a :class:`~atdata_torch.Lens`, only from code you installed and allowed.

        Records from other accounts are data: the code they point at is imported only when its module (or
        ``module:qualname``) is in ``allow`` and is installed; nothing is downloaded or evaluated.

        Args:
            lens: A :class:`LensRecord` or its at-uri.
            allow: Modules (``"pkg.lenses"``) or exact references (``"pkg.lenses:gray"``) you trust.
            register: Also add it to the default lens registry (so ``Dataset.as_type`` finds it).

        Raises:
            AuthError: the code it names is not allowed.
            LensNotFoundError: the module is not installed, or the name is not a lens/function.
            SchemaError: the installed lens's types do not match the record's schemas.
        """
        return load_lens(self.xrpc, lens, allow=allow, register=register)

    # ================================================================================================ discovery
    def list_repos(self, pds: str | None = None, *, limit: int = 10_000) -> list[str]:
        """The DIDs of the repos a PDS hosts (``com.atproto.sync.listRepos``, paged)."""
        return self.xrpc.list_repos(pds, limit=limit)

    def search(
        self,
        text: str | None = None,
        *,
        repos: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        limit: int | None = 50,
    ) -> list[DatasetRecord]:
        """Dataset entries whose name, description or tags contain ``text`` (any case) and carry every tag.

        Without an app view there is no global index: the search covers ``repos`` (handles or DIDs), by default
        every repo on this PDS (``com.atproto.sync.listRepos``). Newest first.
        """
        return search(self.xrpc, text, repos=repos, tags=tags, limit=limit)
