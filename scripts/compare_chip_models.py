"""Compare discovery models on the same labelled RGB chips, as a Markdown table (README material).

    python scripts/compare_chip_models.py --chips ../shared/data/real-chips/dev.npz \\
        --model models/amazon-rgb48 --model results/models/amw-2021-rgb

Each model scores every chip as ``minescan evaluate-chips`` does (its card's normalisation, crop, TTA and
threshold). Two rows per model: all chips, and the chips whose gallery is **not** one of those the
published 2021 RGB model (``44px_v2.6_rgb_2021-11-11.h5``) lists as its training data in its
``_config.txt`` (same sample places; the model used 2020-01-01..2021-07-01 composites, these galleries are
2019 composites, so the same places at another date); the excluded galleries are printed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

# training inputs listed in earthrise-media/mining-detector models/44px_v2.6_rgb_2021-11-11_config.txt
# (file name stems before the date window); a dev.npz gallery whose stem starts with one of them shares
# its sample places
AMW_2021_RGB_TRAINING = (
    "bolivar_2020_thresh_0.8_1_negatives", "amazonas_2020_thresh_0.5_2_negatives", "riverbank_negatives_S2",
    "amazonas_2020_thresh_0.8_sumbsample_3_positives", "MinesPos2018-2020Sentinel_points",
    "bolivar_2020_thresh_0.8_sumbsample_5_positives", "full_amazon_v9_negatives", "v2.0_bolivar_negatives",
    "v2.1.1_bolivar_negatives", "v2.4_amazonas_negatives", "v2.4_amazon_negatives", "v2.4_amazon_positives",
)


def maybe_seen(sources: np.ndarray) -> np.ndarray:
    """True for chips from a gallery the published 2021 RGB model may have been trained on."""
    return np.array([any(str(s).startswith(p) for p in AMW_2021_RGB_TRAINING) for s in sources])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", required=True)
    ap.add_argument("--model", action="append", required=True, help="model directory (repeat)")
    args = ap.parse_args(argv)

    from minescan.models import score_chips as cs
    from minescan.models.chips import load_chips
    from minescan.models.store import load_model

    chips = load_chips(args.chips, require_labels=True)
    seen = maybe_seen(chips.source) if chips.source is not None else np.zeros(len(chips), bool)
    print("| model | chips | n (mines) | threshold | AUC | sensitivity | specificity | sens. @ spec. 0.99 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in args.model:
        model = load_model(path, expect_kind="discovery")
        tta = model.card.get("tta", "none")
        threshold = model.threshold if tta != "none" else model.scan_threshold
        scores = cs.score_chips(model, chips.x, tta=tta)
        for label, sel in (("all", np.ones(len(chips), bool)), ("not in the 2021 RGB training galleries", ~seen)):
            m = cs.binary_metrics(chips.y[sel], scores[sel], threshold)
            print(f"| {model.card.get('name', path)} (tta {tta}) | {label} | {int(sel.sum())} "
                  f"({int(chips.y[sel].sum())}) | {threshold:.3f} | {m['auc']:.3f} | {m['sensitivity']:.3f} | "
                  f"{m['specificity']:.3f} | {m['sensitivity_at_specificity_0.99']:.3f} |")
    if seen.any():
        names = sorted({str(s) for s in chips.source[seen]})
        print(f"\nexcluded ({int(seen.sum())} chips): " + ", ".join(names), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
