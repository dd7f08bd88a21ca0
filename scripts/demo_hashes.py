#!/usr/bin/env python3
"""Check that the demo scan's outputs are byte-identical to a recorded list (a refactoring proof).

    python scripts/demo_hashes.py --record   # after `make demo`: write scripts/demo-outputs.sha256
    python scripts/demo_hashes.py            # compare results/demo/2026Q1/ with the recorded list

Every file under results/demo/2026Q1/ counts except logs, and so do the demo's two trained models
(results/models/demo-*/): their files carry Keras' save time, and the scan outputs carry the models' content
hash, so a list only compares with a run on the same trained models. Run `make demo` without `make
clean-demo` in between (the models are then kept); if the models differ, the check says so and stops.
A change that alters an output must say so by recording a new list in the same commit. Not a CI test: float
results may differ between CPU kinds, so compare on the machine that recorded the list.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCAN = Path("results/demo/2026Q1")
MODELS = Path("results/models")
RECORD = ROOT / "scripts" / "demo-outputs.sha256"


def digests(scan: Path) -> dict[str, str]:
    out = {}
    files = sorted((ROOT / scan).rglob("*")) + sorted((ROOT / MODELS).glob("demo-*/*"))
    for p in files:
        if p.is_file() and p.suffix != ".log" and "logs" not in p.relative_to(ROOT).parts:
            data = p.read_bytes()
            if p.name == "data.yaml":  # the YOLO set names its folder by absolute path: hash it checkout-free
                data = data.replace(str(ROOT).encode(), b"<checkout>")
            out[str(p.relative_to(ROOT))] = hashlib.sha256(data).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="write the list instead of comparing")
    ap.add_argument("--scan", default=str(SCAN), help="scan folder (default %(default)s)")
    args = ap.parse_args()
    now = digests(Path(args.scan))
    if not now:
        print(f"demo_hashes: no files under {args.scan}: run `make demo` first", file=sys.stderr)
        return 2
    if args.record:
        RECORD.write_text("".join(f"{h}  {p}\n" for p, h in now.items()))
        print(f"recorded {len(now)} files in {RECORD.relative_to(ROOT)}")
        return 0
    before = dict(reversed(line.split("  ", 1)) for line in RECORD.read_text().splitlines() if line)
    changed = sorted(p for p in before.keys() & now.keys() if before[p] != now[p])
    retrained = [p for p in changed if p.startswith(str(MODELS))]
    if retrained:
        print(f"demo_hashes: the trained models differ from the recorded ones ({', '.join(retrained)}): "
              "the outputs cannot be compared; re-record after a run you trust", file=sys.stderr)
        return 2
    missing, new = sorted(before.keys() - now.keys()), sorted(now.keys() - before.keys())
    for label, names in (("changed", changed), ("missing", missing), ("new", new)):
        for n in names:
            print(f"{label}: {n}")
    same = len(before.keys() & now.keys()) - len(changed)
    print(f"{same} of {len(before)} recorded files identical; {len(changed)} changed, {len(missing)} missing, "
          f"{len(new)} new")
    return 1 if changed or missing or new else 0


if __name__ == "__main__":
    sys.exit(main())
