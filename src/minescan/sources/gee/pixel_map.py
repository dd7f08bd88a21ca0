"""A linear pixel model as an Earth Engine expression: a whole region's probability map, computed and
exported by Earth Engine, without downloading tiles (``minescan gee pixel-map``).

The band study's goal: a lightweight screen that scales to the world. A sparse logistic pixel model
(``minescan pixel train --model logistic``: standardisation + L1-logistic) is one linear score of
reflectance bands, normalised differences and ratios, so it folds into a single ``Image.expression``::

    P(mine) = 1 / (1 + exp(-(c + sum_i w_i / s_i * f_i)))      c = b - sum_i w_i m_i / s_i

(``m_i``, ``s_i``: the standardisation of feature ``i``). Features with a zero weight are left out: a
sparse model reads only the bands it needs. Normalised differences are written out as ``(a - b) / (a + b)``
of reflectance (the same as of raw values). Models using the water distance or the month, and non-linear
models (random forest), are refused: they have no such expression.

The composite is the scan's (:func:`minescan.sources.gee.composite.build_composite`) with no-data
pixels (0) masked; the export is one batch task to Cloud Storage or Drive, as the tile exports.
"""

from __future__ import annotations

import numpy as np

from minescan.errors import ModelError
from minescan.pixel.features import RATIO_INDICES, _pairs

WEIGHT_FORMAT = "{:.8g}"


def linear_terms(model) -> tuple[float, list[tuple[str, float]]]:
    """(intercept, [(feature, weight on the raw feature)]) of a standardised linear pixel model; zero weights
    dropped. ModelError for anything that is not linear in bands and indices."""
    est = model.estimator
    steps = dict(getattr(est, "named_steps", {}))
    clf = steps.get("clf", est)
    if not hasattr(clf, "coef_") or np.asarray(clf.coef_).ndim != 2 or np.asarray(clf.coef_).shape[0] != 1:
        raise ModelError(
            f"{model.path}: a '{model.card.get('estimator', type(clf).__name__)}' model has no "
            "Earth Engine expression; use a linear model (minescan pixel train --model logistic)"
        )
    fs = model.feature_set
    bad = [f for f in fs.features if f in ("dist_water", "month_cos", "month_sin")]
    if bad:
        raise ModelError(
            f"{model.path}: feature(s) {', '.join(bad)} have no Earth Engine expression here; "
            "train on feature set 'bands' or 'indices'"
        )
    w = np.asarray(clf.coef_, dtype=np.float64)[0]
    b = float(np.asarray(clf.intercept_, dtype=np.float64)[0])
    scaler = steps.get("scale")
    if scaler is not None:
        w = w / scaler.scale_
        b -= float(np.sum(w * scaler.mean_))
    return b, [(f, float(v)) for f, v in zip(fs.features, w, strict=True) if v != 0]


def feature_formula(feature: str, bands: tuple[str, ...]) -> str:
    """The Earth Engine expression text of one feature over reflectance variables named by band."""
    if feature in bands:
        return feature
    pairs = {n: (a, c) for n, a, c in _pairs(bands)}
    if feature in pairs:
        a, c = pairs[feature]
        return f"({a} - {c}) / ({a} + {c})"
    if feature in RATIO_INDICES:
        a, c = RATIO_INDICES[feature]
        return f"{a} / {c}"
    raise ModelError(f"feature '{feature}' has no Earth Engine expression")


def probability_formula(model) -> tuple[str, list[str]]:
    """(expression text of P(mine), the bands it reads)."""
    b, terms = linear_terms(model)
    bands = model.feature_set.bands
    score = WEIGHT_FORMAT.format(b)
    for f, w in terms:
        score += f" + {WEIGHT_FORMAT.format(w)} * {feature_formula(f, bands)}"
    used = [
        x
        for x in bands
        if any(x in feature_formula(f, bands).replace("(", " ").replace(")", " ").split() for f, _ in terms)
    ]
    return f"1 / (1 + exp(-({score.replace('+ -', '- ')})))", used


def pixel_map_image(ee, settings, model, period: str, region, scale: float = 1e-4):
    """The probability image over ``region`` (an ee.Geometry): composite -> reflectance -> expression."""
    from minescan.sources.gee.composite import build_composite

    missing = [x for x in model.feature_set.bands if x not in settings.bands]
    if missing:
        raise ModelError(
            f"{model.path}: band(s) {', '.join(missing)} are not in the composite's bands "
            f"({', '.join(settings.bands)})"
        )
    formula, used = probability_formula(model)
    composite = build_composite(ee, settings, period, region, warn=False)
    refl = (
        composite.updateMask(composite.neq(settings.nodata).reduce(ee.Reducer.min()))
        .select(used)
        .toFloat()
        .multiply(scale)
    )
    return refl.expression(formula, {x: refl.select(x) for x in used}).rename("mine_probability").toFloat()


def pixel_map_export_params(
    image, region_geojson: dict, region_name: str, period: str, scale_m: float, settings, ee
) -> dict:
    """Keyword arguments of ``ee.batch.Export.image.toCloudStorage`` / ``toDrive`` for the map."""
    name = f"minescan_pixelmap_{region_name}_{period}_{int(scale_m)}m"
    params = {
        "image": image,
        "description": name,
        "region": ee.Geometry(region_geojson),
        "scale": scale_m,
        "crs": "EPSG:4326",
        "maxPixels": 10**13,
        "fileFormat": "GeoTIFF",
        "formatOptions": {"cloudOptimized": True},
    }
    if settings.export.destination == "gcs":
        params.update(
            bucket=settings.export.bucket,
            fileNamePrefix=f"{settings.export.prefix.strip('/')}/pixelmap/{region_name}/{period}/{name}",
        )
    else:
        params.update(folder=settings.export.drive_folder, fileNamePrefix=name)
    return params
