"""Integrations with training frameworks; each lives in its own module and needs its own extra.

- :mod:`atdata_torch.integrations.lightning`: :class:`AtdataDataModule`, a ``LightningDataModule``
  (``pip install 'atdata-torch[lightning]'``).
- :mod:`atdata_torch.integrations.ray`: ``read_atdata`` / ``write_atdata`` for Ray Data, and ``TorchCollate``
  (``pip install 'atdata-torch[ray]'``).

Importing this package imports no framework.

Example:
    >>> import atdata_torch.integrations
    >>> # from atdata_torch.integrations.lightning import AtdataDataModule
"""

__all__: list[str] = []
