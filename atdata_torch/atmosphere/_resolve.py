"""``load_dataset("at://...")`` and ``load_dataset("@handle/name[@version]")``.

Reads anonymously (no login): the repo's PDS comes from its DID document. ``pds=`` (or ``$ATDATA_PDS_URL``) is a
PDS to resolve handles on, ``plc=`` (or ``$ATDATA_PLC_URL``) the PLC directory, and ``atmosphere=`` an existing
:class:`Atmosphere` to use instead.
"""

from __future__ import annotations

from typing import Any

from ._client import Atmosphere

__all__ = ["resolve"]


def resolve(
    path: str,
    sample_type: type[Any] | None,
    *,
    split: str | None = None,
    atmosphere: Atmosphere | None = None,
    pds: str | None = None,
    plc: str | None = None,
    **source_options: Any,
) -> Any:
    """The ``Dataset`` / ``DatasetDict`` an at-uri or ``@handle/name`` names."""
    atmo = atmosphere if atmosphere is not None else Atmosphere.anonymous(pds=pds, plc=plc)
    try:
        return atmo.load(path, sample_type, split=split, **source_options)
    finally:
        if atmosphere is None:
            atmo.close()
