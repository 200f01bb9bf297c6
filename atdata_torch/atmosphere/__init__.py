"""Publish and discover schemas, datasets, labels and lenses on the AT Protocol (``science.alt.dataset.*``).

Needs the ``atmosphere`` extra (``pip install 'atdata-torch[atmosphere]'``); the SDK is imported only when an
:class:`Atmosphere` is built. Works against any PDS, with no Bluesky app view: handles resolve through a PDS or
DNS/HTTPS, DIDs through a PLC directory or did:web, and every repo is read from the PDS its DID document names.

Example (needs a PDS; the tests run one on loopback)::

    from atdata_torch.atmosphere import Atmosphere, CodeRef
    atmo = Atmosphere.login("alice.test", "alice-pass", pds="http://localhost:2583")
    entry_uri = atmo.publish_dataset(ds, name="digits", storage="blobs")
    atmo.label("digits", entry_uri, version="1.0.0")
    atd.load_dataset("@alice.test/digits@1.0.0", split="train")      # anyone, no login
"""

from __future__ import annotations

from ._appview import DESCRIBE_SERVICE, PUBLISH_PROCEDURES, SEARCH_DATASETS, dataset_search_params
from ._blobs import BlobSource
from ._blobstore import PDSBlobStore, ShardUploadResult
from ._client import Atmosphere, parse_name
from ._compat import DatasetPublisher, LabelPublisher, LensPublisher, SchemaPublisher
from ._compat_lex import (
    LEXICON_NAMESPACE,
    LexCodeReference,
    LexDatasetEntry,
    LexLabelRecord,
    LexLensRecord,
    LexSchemaRecord,
)
from ._compat_load import (
    AtmosphereIndex,
    AtmosphereIndexEntry,
    DatasetLoader,
    LabelLoader,
    LensLoader,
    SchemaLoader,
)
from ._identity import Identity
from ._lexicon import (
    COLLECTIONS,
    LEGACY_COLLECTIONS,
    AtUri,
    CodeRef,
    DatasetRecord,
    LabelRecord,
    LensRecord,
    SchemaRecord,
    Shard,
)
from ._session import default_session_path
from ._verification import LexCodeHash, LexLensVerification, VerificationLoader, VerificationPublisher
from ._xrpc import XrpcRepo

#: The original's name for :class:`Atmosphere`.
AtmosphereClient = Atmosphere

__all__ = [
    "COLLECTIONS",
    "LEGACY_COLLECTIONS",
    "LEXICON_NAMESPACE",
    "AtUri",
    "Atmosphere",
    "AtmosphereClient",
    "AtmosphereIndex",
    "AtmosphereIndexEntry",
    "BlobSource",
    "CodeRef",
    "DatasetLoader",
    "DatasetPublisher",
    "DatasetRecord",
    "Identity",
    "LabelLoader",
    "LabelPublisher",
    "LabelRecord",
    "LensLoader",
    "LensPublisher",
    "LensRecord",
    "LexCodeReference",
    "LexDatasetEntry",
    "LexLabelRecord",
    "LexLensRecord",
    "LexSchemaRecord",
    "SchemaLoader",
    "SchemaPublisher",
    "SchemaRecord",
    "Shard",
    "XrpcRepo",
    # c17a
    "LexCodeHash",
    "LexLensVerification",
    "PDSBlobStore",
    "DESCRIBE_SERVICE",
    "PUBLISH_PROCEDURES",
    "SEARCH_DATASETS",
    "dataset_search_params",
    "ShardUploadResult",
    "VerificationLoader",
    "VerificationPublisher",
    "default_session_path",
    "parse_name",
]
