"""The digits data set of the Lightning example and of ``configs/*.yaml``: sample types, a lens, and a writer.

scikit-learn's bundled ``load_digits`` (1,797 8x8 images, no download) is written as typed shards:
``train-*.tar`` (80 %) and ``val-*.tar`` / ``test-*.tar`` (10 % each). The configs name the types as
``digits_data:DigitSample`` and ``digits_data:DigitVector``, so ``examples/`` must be importable (the example
scripts have it on ``sys.path`` already; elsewhere set ``PYTHONPATH=examples``).

    uv run python examples/digits_data.py examples/data/digits      # write the shards
"""

from __future__ import annotations

import os
import sys

import numpy as np
from numpy.typing import NDArray

import atdata_torch as atd

__all__ = ["DigitSample", "DigitVector", "to_vector", "write_digits"]


@atd.packable
class DigitSample:
    """One 8x8 grayscale digit, as stored in the shards."""

    image: NDArray[np.float32]  # (8, 8), values in [0, 1]
    label: int


@atd.packable
class DigitVector:
    """The model's view of a digit: 64 pixels in a flat vector (``ds.as_type(DigitVector)``)."""

    pixels: NDArray[np.float32]  # (64,)
    label: int


@atd.lens
def to_vector(s: DigitSample) -> DigitVector:
    """Flatten the image (registered in the lens registry when this module is imported)."""
    return DigitVector(pixels=s.image.reshape(64), label=s.label)


def write_digits(out: str | os.PathLike[str], *, limit: int | None = None, maxcount: int = 64) -> dict[str, int]:
    """Write the train / val / test shards under ``out`` (skipped when they already exist).

    Args:
        out: The directory.
        limit: Use only the first ``limit`` digits of a fixed permutation (small, fast data sets for tests).
        maxcount: Samples per shard.

    Returns:
        The number of samples per split (of the shards on disk: existing shards are kept as they are).
    """
    from sklearn.datasets import load_digits

    out = os.fspath(out)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(int)
    order = np.random.default_rng(0).permutation(len(labels))[:limit]
    n_train, n_val = int(0.8 * len(order)), int(0.1 * len(order))
    parts = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    os.makedirs(out, exist_ok=True)
    for split, idx in parts.items():
        if any(f.startswith(f"{split}-") and f.endswith(".tar") for f in os.listdir(out)):
            continue
        samples = [DigitSample(image=images[i], label=int(labels[i])) for i in idx]
        atd.write_samples(samples, os.path.join(out, f"{split}.tar"), maxcount=maxcount, progress=False)
    return {split: len(atd.Dataset(os.path.join(out, f"{split}-*.tar"))) for split in parts}


if __name__ == "__main__":
    counts = write_digits(sys.argv[1] if len(sys.argv) > 1 else os.path.join("examples", "data", "digits"))
    print(counts)
