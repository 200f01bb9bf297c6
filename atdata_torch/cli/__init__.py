"""The ``atdata-torch`` command line (grows with the index issue)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``atdata-torch`` console script."""
    parser = argparse.ArgumentParser(prog="atdata-torch", description="Inspect and index atdata_torch shards.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    p_info = sub.add_parser("info", help="describe a dataset given by a shard URL / brace pattern")
    p_info.add_argument("url")
    p_head = sub.add_parser("head", help="print the first samples")
    p_head.add_argument("url")
    p_head.add_argument("-n", type=int, default=5)
    p_idx = sub.add_parser("index", help="write index sidecars next to local shards")
    p_idx.add_argument("url")
    args = parser.parse_args(argv)
    import atdata_torch as atd

    if args.version:
        print(atd.__version__)
        return 0
    if args.command == "info":
        print(json.dumps(atd.Dataset(args.url).describe(), indent=2))
        return 0
    if args.command == "head":
        sample: object
        for sample in atd.Dataset(args.url).head(args.n):
            print(repr(sample))
        return 0
    if args.command == "index":
        for idx in atd.build_index(args.url):
            print(f"{idx.count} samples, sha256 {idx.sha256}")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
