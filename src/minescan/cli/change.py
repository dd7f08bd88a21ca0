"""``minescan change`` (change and cumulative layers of a scan) and ``minescan periods`` (a config's
periods, its schedule expanded)."""

from __future__ import annotations

import argparse
import json


def cmd_change(args) -> int:
    from minescan.layers.change import run_change

    s = run_change(region_name=args.region_name, periods=args.periods, history=args.sites, outdir=args.outdir,
                   min_overlap=args.min_overlap, min_growth=args.min_growth)
    c = s["change"]
    print(f"{s['region']} {s['previous_period']} -> {s['period']}: {c['new']['count']} new, "
          f"{c['grown']['count']} grown, {c['shrunk']['count']} shrunk, {c['unchanged']['count']} unchanged, "
          f"{c['vanished']['count']} vanished; {s['cumulative']['tracks']} sites since {s['first_period']}")
    return 0


def cmd_periods(args) -> int:
    import datetime as dt

    from minescan import config as cfgmod
    from minescan.periods import scan_periods

    today = dt.date.fromisoformat(args.today) if args.today else None
    periods = scan_periods(cfgmod.load(args.config, today=today))
    print(json.dumps(periods) if args.json else "\n".join(periods))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "change", help="change layer against the previous period and cumulative layer since the first",
        description="Match the sites of consecutive scans of one region by polygon overlap and write "
                    "change.gpkg/.csv/.kml (new, grown, shrunk, unchanged, vanished against the previous "
                    "period), cumulative.gpkg/.csv/.kml (every site since the first period) and change.json.")
    p.add_argument("--sites", nargs="+", required=True,
                   help="sites.gpkg of every period from the first to this scan's, oldest first")
    p.add_argument("--periods", nargs="+", required=True, help="their periods, in the same order")
    p.add_argument("--region-name", required=True)
    p.add_argument("--outdir", required=True, help="e.g. results/{region}/{period}/change")
    p.add_argument("--min-overlap", type=float, default=0.1,
                   help="same site when the polygons share this fraction of the smaller one (change.min_overlap)")
    p.add_argument("--min-growth", type=float, default=0.1,
                   help="grown/shrunk when the area changes by this fraction (change.min_growth)")
    p.set_defaults(func=cmd_change)

    p = subparsers.add_parser("periods", help="the periods a config scans (periods + schedule), oldest first")
    p.add_argument("--config", required=True)
    p.add_argument("--today", default=None, help=argparse.SUPPRESS)  # YYYY-MM-DD, for schedule.to: null
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_periods)
