"""The long fuzz run over shards and sidecars (issue 15): mutated inputs read four ways, judged by an oracle.

See ``tests/_fuzz.py`` for the inputs, the read modes and the oracle. Prints the counts table (markdown) and the
top distinct bad signatures; saves the first inputs of each bad class under ``--out``. Exit status 1 when any read
was bad. Not part of the test run (``tests/test_fuzz.py`` runs a bounded one).

    python benchmarks/fuzz.py --inputs 100000 --jobs 2 --out /tmp/fuzz-out
    python benchmarks/fuzz.py --seed 0 --replay 1234      # one input, in this process, with its reads
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import _fuzz


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--start", type=int, default=0, help="first input index")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--out", default=None, help="folder for the bad inputs (first few per class)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per read before it counts as a hang")
    ap.add_argument("--top", type=int, default=12, help="signatures shown per bad class")
    ap.add_argument("--replay", type=int, default=None, help="run one input here and print its reads")
    a = ap.parse_args()
    if a.replay is not None:
        inp, results = _fuzz.replay(a.seed, a.replay)
        print(f"input {inp.index}: seed shard {inp.seed_name}, {inp.family}: {inp.desc}; touched {sorted(inp.touched)}")
        for r in results:
            print(f"  {r.mode:8} {r.as_type:6} {r.outcome:18} {r.exc_type} {r.message[:200]} {r.where} {r.detail}")
        return 0
    rep = _fuzz.run_fuzz(a.seed, a.inputs, a.jobs, a.out, read_timeout=a.timeout, progress=True, start=a.start)
    print(rep.markdown(top=a.top))
    if rep.saved:
        print(f"\nsaved {len(rep.saved)} bad inputs under {a.out}")
    return 1 if rep.bad else 0


if __name__ == "__main__":
    sys.exit(main())
