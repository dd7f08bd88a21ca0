"""``minescan segment train|predict|extents``: segmentation of the disturbed area (``minescan.segment``).

    minescan segment train --images A.tif [B.tif ...] --polygons mines.gpkg --out models/seg [--config JSON]
    minescan segment predict --tile T --quadrant Q --tile-path tile.tif --model M --candidates candidates.csv \\
        --mask-out segment.tif --extents-out segment_extents.gpkg
    minescan segment extents --quadrant-extents q1.gpkg q2.gpkg ... --out extents.gpkg
"""

from __future__ import annotations

import json

from minescan import SENTINEL2_BANDS
from minescan.cli.common import grid_args, tile_from_args
from minescan.errors import ConfigError


def _train_config(args):
    from minescan.segment.train import SegmentTrainConfig

    fields = SegmentTrainConfig.__dataclass_fields__
    overrides = {}
    if args.config:
        try:
            overrides = json.loads(args.config)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config: not a JSON object ({exc})") from exc
        if not isinstance(overrides, dict):
            raise ConfigError("--config: not a JSON object")
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ConfigError(f"--config: unknown segment.train key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(fields))})")
    for key in ("epochs", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    return SegmentTrainConfig(**{**overrides, "bands": list(args.bands), "scale": args.scale})


def cmd_train(args) -> int:
    from minescan.segment.train import train_segmenter

    card = train_segmenter(args.images, args.polygons, args.out, _train_config(args),
                           polygons_layer=args.polygons_layer, name=args.name,
                           polygons_where=args.polygons_where)
    m = card["metrics"]
    for side in ("train", "validation", "test"):
        s = m[side]
        print(f"segment {side}: {s['images']} tiles, pixel F1 {s['f1']} precision {s['precision']} "
              f"recall {s['recall']} (per tile, averaged), IoU {s['iou_pooled']} (pooled)")
    return 0


def cmd_predict(args) -> int:
    from minescan.scan.inference import import_keras_lean
    from minescan.segment.predict import load_segmenter, run_segment

    import_keras_lean()
    model = load_segmenter(args.model)
    run_segment(args.tile_path, tile_from_args(args), args.quadrant, model, args.scale, args.candidates,
                args.mask_out, args.extents_out, where=args.where, margin_px=args.margin_px,
                window_px=args.window_px, overlap_px=args.overlap_px, batch_size=args.batch_size,
                threshold=args.threshold, min_area_m2=args.min_area_m2)
    return 0


def cmd_extents(args) -> int:
    from minescan.segment.predict import merge_extents

    merge_extents(args.quadrant_extents, args.out)
    return 0


def register(sub) -> None:
    p = sub.add_parser("segment", help="segmentation of the disturbed area: train, predict per quadrant, extents")
    s = p.add_subparsers(dest="segment_command", required=True, metavar="STEP")

    t = s.add_parser("train", help="train a SegFormer from GeoTIFFs and a polygon layer; writes a model directory")
    t.add_argument("--images", nargs="+", required=True, help="GeoTIFFs with band descriptions")
    t.add_argument("--polygons", required=True, help="disturbed-area polygons, any vector format and CRS")
    t.add_argument("--polygons-layer", default=None, help="layer inside a multi-layer file")
    t.add_argument("--polygons-where", default=None, metavar="COLUMN=V1,V2",
                   help="keep only features whose COLUMN is one of the values (e.g. class=mine)")
    t.add_argument("--out", required=True, help="model directory to write")
    t.add_argument("--bands", nargs="+", default=list(SENTINEL2_BANDS))
    t.add_argument("--scale", type=float, default=1e-4, help="tile value to reflectance factor")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--name", default=None)
    t.add_argument("--config", default=None,
                   help="JSON object of segment.train settings (variant, loss, alpha, beta, tile_px, ...)")
    t.set_defaults(func=cmd_train)

    q = s.add_parser("predict", help="disturbed-area probability over one quadrant core: mask COG + extents")
    q.add_argument("--tile", required=True)
    q.add_argument("--quadrant", required=True, choices=["NW", "NE", "SW", "SE"])
    q.add_argument("--tile-path", required=True)
    q.add_argument("--model", required=True, help="segmentation model directory")
    q.add_argument("--candidates", required=True, help="the quadrant's candidates.csv (from detect)")
    q.add_argument("--scale", type=float, default=1e-4)
    q.add_argument("--where", choices=["detections", "everywhere"], default="detections",
                   help="segment only windows around detected cells (default) or the whole core")
    q.add_argument("--margin-px", type=int, default=270, help="context around detected cells (segment.margin_px)")
    q.add_argument("--window-px", type=int, default=None, help="default: the model card's")
    q.add_argument("--overlap-px", type=int, default=None, help="default: the model card's")
    q.add_argument("--batch-size", type=int, default=1)
    q.add_argument("--threshold", type=float, default=None, help="default: the model card's")
    q.add_argument("--min-area-m2", type=float, default=0.0, help="drop extent polygons smaller than this")
    q.add_argument("--mask-out", required=True)
    q.add_argument("--extents-out", required=True)
    grid_args(q)
    q.set_defaults(func=cmd_predict)

    e = s.add_parser("extents", help="merge the quadrants' extent polygons into the scan's extents.gpkg")
    e.add_argument("--quadrant-extents", nargs="+", required=True)
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_extents)
