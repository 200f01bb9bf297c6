"""The atdata_torch error tree.

Every exception raised on purpose derives from :class:`AtdataError` and, where one fits, from the builtin callers
already catch (``TypeError``, ``ValueError``, ``OSError``, ...). Messages: expected, found, where, and the fix.

Example:
    >>> import atdata_torch as atd
    >>> try:
    ...     raise atd.DecodeError("payload is not msgpack", shard="a.tar", key="k0", offset=0)
    ... except ValueError as e:   # DecodeError is also a ValueError
    ...     print(e)
    payload is not msgpack [shard=a.tar key=k0 offset=0]
"""

from __future__ import annotations

import tarfile
from typing import Any

from ._redaction import RedactingFilter, redact_text  # noqa: F401 (re-exported)
from ._redaction import redact as _redact

__all__ = [
    "AppViewError",
    "AppViewRequiredError",
    "AppViewUnavailableError",
    "AtdataError",
    "AuthError",
    "BlobLimitError",
    "ChecksumError",
    "ConfigError",
    "DecodeError",
    "EmptyDatasetError",
    "IdentityError",
    "IndexNotFoundError",
    "IndexStoreError",
    "LensNotFoundError",
    "LensPutterError",
    "LoaderStateError",
    "ManifestNotFoundError",  # manifests (c17m)
    "MissingDependencyError",
    "PartialFailureError",
    "MixtureError",  # issue 18: mixtures
    "PublishError",
    "RecordNotFoundError",
    "SampleIndexError",
    "SampleKeyError",
    "SchemaError",
    "SkippedSamplesWarning",
    "ShardError",
    "ShardFormatError",
    "ShardNotFoundError",
    "SourceError",
    "SplitError",
]


class AtdataError(Exception):
    """Base class of every error atdata_torch raises on purpose.

    Args:
        message: What went wrong and how to fix it.
        shard: The shard URL or path involved, if any.
        key: The sample key involved, if any.
        offset: The byte offset in the shard, if any.
        field: The sample field involved, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        shard: str | None = None,
        key: str | None = None,
        offset: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = redact_text(message)
        self.shard = _redact(shard) if shard is not None else None
        self.key = key
        self.offset = offset
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = [
            f"{name}={value}"
            for name, value in (
                ("shard", self.shard),
                ("key", self.key),
                ("offset", self.offset),
                ("field", self.field),
            )
            if value is not None
        ]
        return f"{self.message} [{' '.join(where)}]" if where else self.message

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the keyword context when an error crosses a DataLoader worker boundary.
        return (
            _rebuild,
            (type(self), self.message, self.shard, self.key, self.offset, self.field),
        )


def _rebuild(
    cls: type[AtdataError],
    message: str,
    shard: str | None,
    key: str | None,
    offset: int | None,
    field: str | None,
) -> AtdataError:
    return cls(message, shard=shard, key=key, offset=offset, field=field)


# ---------------------------------------------------------------------------------------------------------------
# The original atdata's error classes, with its constructor arguments (issue 17, "errors"). Our shard errors derive
# from ShardError, and each error also derives from the builtin the original raised in the same place (a missing
# field or a wrong payload type: TypeError; a damaged shard: tarfile.ReadError; no lens: ValueError; an unknown
# shard or sample key: KeyError), so that `except` clauses written for the original keep working.


class ShardError(AtdataError):
    """A shard could not be accessed or read: the base of :class:`SourceError` and :class:`ShardFormatError`.

    Takes the original atdata's arguments, ``ShardError(shard_id, reason)``, or ours, ``ShardError(message,
    shard=...)``. ``shard_id`` and ``reason`` are set either way.

    Example:
        >>> str(ShardError("a.tar", "truncated"))
        "Failed to read shard 'a.tar': truncated"
        >>> e = ShardFormatError("tar is truncated", shard="b.tar")
        >>> isinstance(e, ShardError), e.shard_id, e.reason
        (True, 'b.tar', 'tar is truncated')
    """

    def __init__(
        self,
        shard_id: str,
        reason: str | None = None,
        *,
        shard: str | None = None,
        key: str | None = None,
        offset: int | None = None,
        field: str | None = None,
    ) -> None:
        self._original: tuple[str, str] | None = None
        if reason is None:  # ours: the first argument is the message
            super().__init__(shard_id, shard=shard, key=key, offset=offset, field=field)
            self.shard_id: str | None = self.shard
            self.reason = self.message
            return
        self._original = (shard_id, reason)
        super().__init__(f"Failed to read shard {_redact(shard_id)!r}: {reason}", shard=shard_id)
        self.shard_id = self.shard
        self.reason = redact_text(reason)

    def _render(self) -> str:
        return self.message if getattr(self, "_original", None) else super()._render()

    def __reduce__(self) -> tuple[object, ...]:
        if self._original is not None:
            return (type(self), self._original)
        return super().__reduce__()


class SampleKeyError(AtdataError, KeyError):
    """No sample has this key (``Dataset.get(key)``); also a ``KeyError``. The original's ``SampleKeyError(key)``.

    Example:
        >>> e = SampleKeyError("k9")
        >>> e.key, isinstance(e, KeyError)
        ('k9', True)
    """

    def __init__(self, key: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"Sample with key {key!r} not found in dataset; check the key (ds.get() matches the __key__ exactly)",
            key=key,
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.key, self.message))


def _lens_message(source_type: Any, view_type: Any, available: list[tuple[Any, str]]) -> str:
    """The original atdata's LensNotFoundError text: the available lenses from the source, and a lens to define."""
    src = getattr(source_type, "__name__", str(source_type))
    view = getattr(view_type, "__name__", str(view_type))
    lines = [f"No lens transforms {src} \u2192 {view}"]
    if available:
        lines += ["", f"Available lenses from {src}:"]
        lines += [f"  - {src} \u2192 {getattr(t, '__name__', t)} (via {name})" for t, name in available]
    lines += [
        "",
        "Did you mean to define:",
        "  @lens",
        f"  def {src.lower()}_to_{view.lower()}(source: {src}) -> {view}:",
        f"      return {view}(...)",
    ]
    return "\n".join(lines)


class LensPutterError(AtdataError, NotImplementedError):
    """``lens.put(view, source)`` on a lens without a putter (the original atdata silently returned the source
    unchanged, losing the view's changes; we raise). Also a ``NotImplementedError``."""


# ---------------------------------------------------------------------------------------------------------------


class SchemaError(AtdataError, TypeError):
    """A sample type or a value does not fit the schema (bad annotation, object array, wrong dtype).

    Takes our ``SchemaError(message, shard=..., key=..., field=...)`` or the original's
    ``SchemaError(sample_type_name, expected_fields, actual_fields)`` (a field mismatch; the message lists the
    missing and unexpected fields).
    """

    def __init__(
        self, message: str, expected_fields: list[str] | None = None, actual_fields: list[str] | None = None, **kw: Any
    ) -> None:
        self.sample_type_name: str = message
        self.expected_fields: list[str] = list(expected_fields or [])
        self.actual_fields: list[str] = list(actual_fields or [])
        if expected_fields is not None or actual_fields is not None:
            message = _schema_message(message, self.expected_fields, self.actual_fields)
        super().__init__(message, **kw)


def _schema_message(name: str, expected: list[str], actual: list[str]) -> str:
    """The original atdata's field-mismatch text, with the fix."""
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    lines = [f"Schema mismatch for {name}"]
    lines += [f"  Missing fields: {', '.join(missing)}"] if missing else []
    lines += [f"  Unexpected fields: {', '.join(extra)}"] if extra else []
    lines += ["", f"Expected: {', '.join(sorted(expected))}", f"Got:      {', '.join(sorted(actual))}"]
    return "\n".join([*lines, "Fix: read with a sample type whose fields match the data, or rewrite the data."])


class SourceError(ShardError, OSError):
    """A shard could not be opened or read from its source."""


class ShardNotFoundError(SourceError, FileNotFoundError, KeyError):
    """A shard named by the dataset does not exist (also a ``KeyError``: the original raised one for an unknown shard
    id)."""


class ShardFormatError(ShardError, ValueError, tarfile.ReadError):
    """A shard is not a valid tar (truncated, bad header checksum, bad size field); also a ``tarfile.ReadError``."""


class DecodeError(AtdataError, ValueError, TypeError):
    """A member's payload could not be decoded into a sample (not msgpack, missing field, bad array); also a
    ``TypeError`` (what the original raised for a missing field or a payload that is not a map)."""


class LensNotFoundError(AtdataError, LookupError, ValueError):
    """No lens (or chain of lenses) converts between the requested sample types; also a ``ValueError``.

    Takes our ``LensNotFoundError(message)`` or the original's ``LensNotFoundError(source_type, view_type,
    available_targets)`` (``available_targets``: ``[(view type, lens name)]``).
    """

    def __init__(
        self, message: Any, view_type: Any = None, available_targets: list[tuple[Any, str]] | None = None, **kw: Any
    ) -> None:
        self.source_type: Any = None
        self.view_type: Any = view_type
        self.available_targets: list[tuple[Any, str]] = list(available_targets or [])
        if view_type is not None:
            self.source_type = message
            message = _lens_message(message, view_type, self.available_targets)
        super().__init__(message, **kw)


class SplitError(AtdataError, ValueError):
    """A requested split does not exist or a split expression is malformed."""


class IndexStoreError(AtdataError):
    """The dataset index could not read or write an entry."""


class IndexNotFoundError(IndexStoreError, KeyError):
    """A dataset, label, schema or lens is not in the index; the message lists similar names.

    It is also a ``KeyError`` (what the original atdata raises), so ``except KeyError`` keeps working.
    """


class ConfigError(AtdataError, ValueError):
    """A data config is malformed: an unknown key, a wrongly typed value, a type that cannot be imported.

    The message starts with the offending key (or the file), and lists the allowed keys for unknown ones.

    Example:
        >>> from atdata_torch.config import DataConfig
        >>> try:
        ...     DataConfig.from_dict({"shuffle": "yes"})
        ... except ValueError as e:   # ConfigError is also a ValueError
        ...     print(e)
        shuffle: expected true or false, got 'yes'
    """


class LoaderStateError(AtdataError, ValueError):
    """A loader state does not fit this loader (another dataset, another seed, a newer format)."""


# ---- issue 18: weighted mixtures (atdata_torch.mixture) ----
class MixtureError(AtdataError, ValueError):
    """A weighted mixture cannot be built or laid out: bad weights, sources that cannot share batches (another
    sample type or other map/filter stages), a source without samples, or no rule that ends the epoch."""


class PublishError(AtdataError):
    """A record could not be published to, or resolved from, the AT Protocol network."""


class AuthError(PublishError, PermissionError):
    """An AT Protocol login failed, a session expired for good, or an account may not write where it tried to."""


class IdentityError(PublishError, LookupError):
    """A handle or DID could not be resolved, or a handle and its DID document disagree."""


class RecordNotFoundError(PublishError, LookupError):
    """An AT Protocol record (schema, dataset entry, label, lens) does not exist; the message says where it looked."""


class BlobLimitError(PublishError, ValueError):
    """A shard is larger than the PDS accepts as a blob; the message names the limit and the alternatives."""


class ChecksumError(SourceError):
    """Downloaded shard bytes do not match the checksum their record or sidecar promises."""


class MissingDependencyError(AtdataError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    @classmethod
    def for_extra(cls, package: str, extra: str, feature: str) -> MissingDependencyError:
        """Build the standard message for a missing optional dependency.

        Example:
            >>> str(MissingDependencyError.for_extra("boto3", "s3", "S3 sources"))[:40]
            'S3 sources needs the optional dependency'
        """
        return cls(
            f"{feature} needs the optional dependency {package!r}, which is not installed; "
            f"install it with: pip install 'atdata-torch[{extra}]'"
        )


class SkippedSamplesWarning(UserWarning):
    """Emitted when iteration with ``on_error="skip"`` or ``"warn"`` skipped samples (reported at epoch end)."""


# ------------------------------------------------------------------------------------------------ manifests (c17m)
class ManifestNotFoundError(AtdataError, FileNotFoundError):
    """A shard has no manifest (``<shard>.manifest.json`` + ``.manifest.parquet``) where a query needs one; also a
    ``FileNotFoundError``, as the original raised."""


# --- issue 17, c17w: the original atdata's Dataset surface (process_shards, select, write_samples) -------------------
class EmptyDatasetError(AtdataError, ValueError):
    """There were no samples where some were needed (``write_samples([])``); also a ``ValueError``, as the
    original atdata raised."""


class SampleIndexError(AtdataError, IndexError):
    """A sample position is out of range, or not an int / slice / sequence of ints (``ds[i]``, ``ds.select()``);
    also an ``IndexError``, as the original atdata raised."""


class PartialFailureError(AtdataError):
    """Some shards of ``Dataset.process_shards()`` failed; the others' results are kept.

    The constructor takes the original atdata's arguments, and the message is the original's: how many shards
    failed, the first five with their errors, and where to look. Retry the failed ones with
    ``ds.process_shards(fn, shards=e.failed_shards)``.

    Args: ``succeeded_shards`` and ``failed_shards`` in order, ``errors`` ``{shard: exception}`` for the failed,
    ``results`` ``{shard: fn's result}`` for the succeeded.
    """

    def __init__(
        self,
        succeeded_shards: list[str],
        failed_shards: list[str],
        errors: dict[str, Exception],
        results: dict[str, object],
    ) -> None:
        self.succeeded_shards = succeeded_shards
        self.failed_shards = failed_shards
        self.errors = errors
        self.results = results
        n_ok, n_fail = len(succeeded_shards), len(failed_shards)
        lines = [f"{n_fail}/{n_ok + n_fail} shards failed during processing"]
        lines += [f"  {s}: {errors.get(s)}" for s in failed_shards[:5]]
        if n_fail > 5:
            lines.append(f"  ... and {n_fail - 5} more")
        lines += ["", f"Access .succeeded_shards ({n_ok}) and .failed_shards ({n_fail}) to inspect or retry."]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.succeeded_shards, self.failed_shards, self.errors, self.results))


# ---------------------------------------------------------------------------------------------------- random access
__all__ += ["RandomAccessError"]


class RandomAccessError(AtdataError, TypeError):
    """A dataset cannot be indexed by position (``ds[i]``): a ``filter()`` stage makes its length unknown, or its
    remote shards have no index sidecars; the message names the fix."""


# ------------------------------------------------ the original atdata's AppView errors (the AT Protocol search service)


class AppViewError(PublishError):
    """An AppView (the AT Protocol search service) request failed; the original atdata's ``AppViewError``."""


class AppViewUnavailableError(AppViewError):
    """An AppView is configured but unreachable or failed: ``AppViewUnavailableError(url, reason)``. The url is
    redacted (``https://***@av.example``)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = _redact(url)
        self.reason = redact_text(reason)
        super().__init__(
            f"AppView at {self.url} is unavailable: {self.reason}. Retry later, or resolve without the AppView."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.url, self.reason))


class AppViewRequiredError(AppViewError):
    """An operation needs an AppView and none is configured: ``AppViewRequiredError(operation)``."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(
            f'Operation {operation!r} requires an AppView, and none is configured; pass appview="https://..." '
            "to the client (the original atdata: Atmosphere.login(handle, password, appview=...))"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.operation,))
