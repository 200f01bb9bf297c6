"""The ``atdata-torch`` command line: look inside shards, verify them, index, convert, and manage the cache.

Every command has ``--help``. Exit codes: 0 success, 1 failure (a verification that found bad samples, a missing
shard, a corrupt file), 2 usage error. ``--json`` prints machine-readable output.

The commands live in ``_inspect`` (info, preview), ``_shards`` (verify, index build, convert), ``_catalog``
(datasets, ls, schema show, login, publish) and ``_cache``; ``_common`` holds what they share. These modules
import only click and the standard library at the top: torch, numpy and the dataset machinery are imported inside
the commands that need them, so that ``atdata-torch --help`` answers at once.

Example:
    >>> from click.testing import CliRunner
    >>> CliRunner().invoke(main, ["--help"]).exit_code
    0
"""

from __future__ import annotations

import click

from ._cache import cache_group
from ._catalog import datasets, login, ls, publish, schema_group
from ._inspect import info, preview
from ._shards import convert, index_group, verify

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="atdata-torch", prog_name="atdata-torch")
def main() -> None:
    """Inspect, verify, index and convert atdata_torch / WebDataset shards."""


@click.command()
def version() -> None:
    """Print the version (the original atdata's ``atdata version``; ``--version`` says the same)."""
    from .. import __version__

    click.echo(f"atdata-torch {__version__}")


for _command in (info, preview, verify, index_group, convert, datasets, ls, login, publish, schema_group, cache_group):
    main.add_command(_command)
main.add_command(version)


if __name__ == "__main__":
    main()
