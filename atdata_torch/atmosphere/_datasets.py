"""Dataset entries and the labels that name them, on a repo: publish, label, list, and look up by name/version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..dataset import Dataset
from ..errors import PublishError, RecordNotFoundError, SchemaError
from ..schema import DictSample, PackableSample
from ._kinds import list_kind
from ._lexicon import (
    COLLECTIONS,
    AtUri,
    DatasetRecord,
    LabelRecord,
    entry_record,
    kind_of,
    label_record,
    parse_entry,
    parse_label,
)
from ._schemas import publish_schema
from ._storage import build_storage
from ._xrpc import XrpcRepo

__all__ = ["get_dataset", "label", "list_datasets", "list_labels", "parse_name", "publish_dataset"]


def publish_dataset(
    xrpc: XrpcRepo,
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
    """See :meth:`Atmosphere.publish_dataset`."""
    xrpc.account()
    if not isinstance(ds, Dataset):
        ds = Dataset(ds, sample_type=sample_type or DictSample)
    st = sample_type or ds.sample_type
    if schema_uri is None:
        if st is None or st is DictSample or not (isinstance(st, type) and issubclass(st, PackableSample)):
            raise SchemaError(
                f"publish_dataset({name!r}) needs the sample schema: pass a typed Dataset[T], sample_type=T, or "
                "schema_uri='at://.../science.alt.dataset.schema/...'"
            )
        schema_uri = publish_schema(xrpc, st)
    shards = ds.list_shards()
    if not shards:
        raise PublishError(f"publish_dataset({name!r}): the dataset has no shards")
    stor, size = build_storage(xrpc, ds, shards, storage, endpoint=endpoint, region=region, progress=progress)
    rec = entry_record(
        name=name,
        schema_uri=schema_uri,
        storage=stor,
        description=description,
        tags=tags,
        license=license,
        size=size,
        metadata=metadata,
    )
    uri = xrpc.create_record(COLLECTIONS["entry"], rec)
    if version is not None:
        label(xrpc, name, uri, version=version, description=description)
    return uri


def list_datasets(xrpc: XrpcRepo, repo: str | None = None) -> list[DatasetRecord]:
    """See :meth:`Atmosphere.list_datasets`."""
    did = xrpc.resolve(repo)
    endpoint = xrpc.pds_of(did)
    out = [parse_entry(u, v, pds=endpoint) for u, v in list_kind(xrpc, "entry", did)]
    return sorted(out, key=lambda r: r.created_at or "", reverse=True)


def get_dataset(xrpc: XrpcRepo, ref: str) -> DatasetRecord:
    """See :meth:`Atmosphere.get_dataset`."""
    if ref.startswith("at://"):
        return _dataset_at(xrpc, ref)
    repo, name, version = parse_name(ref)
    did = xrpc.resolve(repo)
    labels = [lab for lab in list_labels(xrpc, did) if lab.name == name]
    if version is not None:
        hits = [lab for lab in labels if lab.version == version]
        if not hits:
            versions = sorted({lab.version or "(none)" for lab in labels})
            raise RecordNotFoundError(
                f"{repo} has no version {version!r} of {name!r}"
                + (f"; versions: {versions}" if versions else "; it has no labels of that name")
            )
        return get_dataset(xrpc, _newest(hits).dataset_uri)
    if labels:
        return get_dataset(xrpc, _newest(labels).dataset_uri)
    entries = list_datasets(xrpc, did)
    named = [e for e in entries if e.name == name]
    if named:
        return named[0]
    have = sorted({e.name for e in entries})
    raise RecordNotFoundError(f"{repo} has no dataset named {name!r}; its datasets: {have}")


def _dataset_at(xrpc: XrpcRepo, ref: str) -> DatasetRecord:
    """The entry at an ``at://`` URI, or the entry a label there names."""
    uri, value = xrpc.get_record(ref)
    kind = kind_of(AtUri.parse(uri).collection or "")
    if kind == "label":
        return get_dataset(xrpc, str(value.get("datasetUri")))
    if kind != "entry":
        raise RecordNotFoundError(f"{ref} is a {kind or 'foreign'} record, not a dataset entry or label")
    did = AtUri.parse(uri).repo
    return parse_entry(uri, value, pds=xrpc.pds_of(did))


def _newest(labels: list[LabelRecord]) -> LabelRecord:
    return max(labels, key=lambda lab: lab.created_at or "")


def label(
    xrpc: XrpcRepo, name: str, dataset_uri: str, *, version: str | None = None, description: str | None = None
) -> str:
    """See :meth:`Atmosphere.label`."""
    xrpc.account()
    get_dataset(xrpc, dataset_uri)  # it must exist and be an entry
    rec = label_record(name=name, dataset_uri=dataset_uri, version=version, description=description)
    return xrpc.create_record(COLLECTIONS["label"], rec)


def list_labels(xrpc: XrpcRepo, repo: str | None = None) -> list[LabelRecord]:
    """See :meth:`Atmosphere.list_labels`."""
    return [parse_label(u, v) for u, v in list_kind(xrpc, "label", repo)]


def parse_name(ref: str) -> tuple[str, str, str | None]:
    """``(repo, name, version)`` of ``@handle/name[@version]`` (or ``handle/name``, or a DID).

    Raises:
        ValueError: not such a name.

    Example:
        >>> parse_name("@alice.test/digits@1.0.0"), parse_name("did:plc:abc/mnist")
        (('alice.test', 'digits', '1.0.0'), ('did:plc:abc', 'mnist', None))
    """
    body = ref[1:] if ref.startswith("@") else ref
    repo, sep, rest = body.partition("/")
    if not sep or not repo or not rest:
        raise ValueError(f"{ref!r} is not '@handle/name[@version]'")
    name, _, version = rest.partition("@")
    if not name:
        raise ValueError(f"{ref!r} has no dataset name")
    return repo, name, version or None
