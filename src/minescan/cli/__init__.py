"""The ``minescan`` command line. Snakemake rules call these commands; each does one stage's work.

Errors a user can fix (bad config, missing band, corrupt file, ...) print one line naming the culprit and
exit with status 2; nothing half-written is left behind.

One module per command group, each with ``register(subparsers)``; :data:`GROUPS` is the plain list of them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from minescan import __version__
from minescan.cli import change, datasets, device, gee, layers, models, pixel, scan, segment, sources
from minescan.errors import MinescanError

#: the command groups, in the order of ``minescan --help``
GROUPS = (scan, sources, models, pixel, segment, layers, change, gee, datasets, device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minescan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"minescan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the command and return its exit status (2 for a user error, said in one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args) or 0
    except MinescanError as exc:
        print(f"minescan: error: {exc}", file=sys.stderr)
        return 2


#: commands that leave without the interpreter's teardown once done (see :func:`main`)
FAST_EXIT = ("detect", "classify")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    code = run(argv)
    if any(m in sys.modules for m in ("tensorflow", "onnxruntime", "openvino")) and any(a in FAST_EXIT for a in argv[:3]):
        # TensorFlow's teardown at interpreter exit takes seconds (measured 0.5-4 s per detect job,
        # benchmarks/bench_floor.py), ONNX Runtime's and the rest's ~0.3 s, and nothing a finished scan
        # command needs: its outputs are written and renamed, its read-ahead threads joined. Flush and leave.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
