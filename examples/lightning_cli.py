"""The digits example through ``LightningCLI``: every setting comes from a YAML config.

uv run python examples/digits_data.py                                   # writes examples/data/digits
uv run examples/lightning_cli.py fit --config configs/digits.yaml
uv run examples/lightning_cli.py fit --config configs/digits.yaml --trainer.max_steps=20 --data.num_workers=0
"""

from __future__ import annotations

import os
import sys

from lightning.pytorch.cli import LightningCLI

from atdata_torch.integrations.lightning import AtdataDataModule

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lightning_train import DigitClassifier


def main(args: list[str] | None = None) -> LightningCLI:
    """Run the CLI (``args``: the command line, default ``sys.argv[1:]``)."""
    return LightningCLI(DigitClassifier, AtdataDataModule, args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
