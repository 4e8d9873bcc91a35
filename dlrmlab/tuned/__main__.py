"""Turn a tuning cache measured on a GPU into shipped entries:

    python -m dlrmlab.tuned entries CACHE.json --family h200 [--gpu NAME] > entries.json   # on the GPU
    python -m dlrmlab.tuned add entries.json                                              # in a checkout

``entries`` prints the family's entries as ``defaults.json`` holds them (``--gpu``: the card's name, by
default this machine's); ``add`` merges them into this checkout's ``dlrmlab/tuned/defaults.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dlrmlab import device, tuned
from dlrmlab.errors import DlrmlabError


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlrmlab.tuned", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    e = sub.add_parser("entries", help="print a tuning cache's entries of one GPU family as shipped entries")
    e.add_argument("cache", type=Path)
    e.add_argument("--family", required=True)
    e.add_argument("--gpu", help="the card's name (default: this machine's GPU)")
    a = sub.add_parser("add", help="merge entries (a JSON list) into dlrmlab/tuned/defaults.json")
    a.add_argument("entries", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.what == "entries":
            entries = tuned.shipped_entries(json.loads(args.cache.read_text()), args.family,
                                            args.gpu or device.limits()["name"])
            if not entries:
                raise DlrmlabError(f"no {args.family} fast-kernel entries in {args.cache}")
            print(json.dumps(entries, indent=2))
        else:
            entries = json.loads(args.entries.read_text())
            print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} added to {tuned.add_shipped(entries)}")
    except (OSError, ValueError, KeyError, DlrmlabError) as err:
        print(f"dlrmlab: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
