"""Report plots and tables of one scan (PNG via matplotlib's Agg backend, CSV), for ``snakemake --report``.

- detections_by_class.png: sites and detected cells per impact class, sites split registered/unregistered;
- area_by_area.png: mined area (ha) per protected/indigenous area and per admin unit, registered or not;
- probability_histogram.png: discovery probability of every candidate (kept, rejected as no ore, removed
  as isolated by the spatial prior) with the main and the isolated-candidate cut-offs;
- model_metrics.png: cross-validation confusion matrices, accuracy and F1 from the model cards;
- summary_table.csv: the headline numbers of summary.json and layers.json as one two-column table.

Figures are drawn with matplotlib's object API (no pyplot, no global backend switch). PNG files carry no
timestamp or software version, so the same inputs give the same bytes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from minescan.io_utils import atomic_output, write_csv
from minescan.vector_io import read_sites

log = logging.getLogger(__name__)

IMPACT_COLOURS = {"high": "#d7191c", "low": "#fdae61", "unrated": "#bbbbbb", "no_ore": "#888888"}
PLOTS = ("detections_by_class.png", "area_by_area.png", "probability_histogram.png", "model_metrics.png")
TABLE = "summary_table.csv"


def _save(fig, path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_detections_by_class(sites: pd.DataFrame, summary: dict, path) -> None:
    fig = Figure(figsize=(9, 3.6))
    a1, a2 = fig.subplots(1, 2)
    classes = [c for c in ("high", "low", "unrated") if c in set(sites.get("impact", [])) or c != "unrated"]
    reg = sites["registered"] if "registered" in sites else pd.Series("unchecked", index=sites.index)
    x = np.arange(len(classes))
    bottom = np.zeros(len(classes))
    for status, colour, label in (("no", "#222222", "unregistered"), ("yes", "#1a9850", "registered"),
                                  ("unchecked", "#999999", "registry not checked")):
        counts = np.array([int(((sites["impact"] == c) & (reg == status)).sum()) for c in classes])
        if counts.any():
            a1.bar(x, counts, bottom=bottom, color=colour, label=label, width=0.6)
            bottom += counts
    a1.set_xticks(x, classes)
    a1.set_title(f"sites by impact ({len(sites)})")
    a1.set_ylabel("sites")
    if len(sites):
        a1.legend(frameon=False, fontsize=8)
    det = summary.get("detections_by_impact", {})
    rej = summary.get("rejected_no_ore", 0)
    iso = summary.get("spatial_prior", {}).get("candidates_removed", 0)
    labels = [*classes, "no ore\n(rejected)", "isolated\n(removed)"]
    values = [det.get(c, 0) for c in classes] + [rej, iso]
    colours = [IMPACT_COLOURS.get(c, "#bbbbbb") for c in classes] + ["#888888", "#5e3c99"]
    a2.bar(np.arange(len(labels)), values, color=colours, width=0.6)
    a2.set_xticks(np.arange(len(labels)), labels, fontsize=8)
    a2.set_title(f"candidate cells ({summary.get('candidates', sum(values))})")
    a2.set_ylabel("detection cells")
    for ax in (a1, a2):
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    _save(fig, path)


def plot_area_by_area(areas: pd.DataFrame, path, basis: str = "cells") -> None:
    """``basis``: what the hectares were measured on (layers.json ``area_basis``): the detected cells, or
    the segmented extents of a segmented scan."""
    n = len(areas)
    fig = Figure(figsize=(9, max(2.4, 0.45 * n + 1.2)))
    ax = fig.subplots()
    if n == 0:
        _empty(ax, "no overlay or admin layer configured (layers.overlays, layers.admin)")
    else:
        labels = [f"{r.name}  [{r.kind}]" for r in areas.itertuples()]
        y = np.arange(n)[::-1]
        unreg = areas["unregistered_area_ha"].to_numpy(dtype=float)
        reg = areas["mined_area_ha"].to_numpy(dtype=float) - unreg
        ax.barh(y, unreg, color="#222222", label="unregistered")
        ax.barh(y, reg, left=unreg, color="#1a9850", label="registered or not checked")
        for yi, total, s in zip(y, areas["mined_area_ha"], areas["sites"], strict=True):
            ax.text(total, yi, f" {total:.1f} ha, {s} sites", va="center", fontsize=8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlabel("mined area (ha, segmented extents)" if basis == "segmented" else
                      "mined area (ha, detected cells)")
        ax.set_xlim(0, max(1.0, float(areas["mined_area_ha"].max())) * 1.35)
        ax.legend(frameon=False, fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2)
        ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("mined area per protected area and admin unit", loc="left")
    fig.tight_layout()
    _save(fig, path)


def plot_probability_histogram(detections: pd.DataFrame, rejected: pd.DataFrame, summary: dict, path) -> None:
    fig = Figure(figsize=(9, 3.6))
    ax = fig.subplots()
    thr = (summary.get("thresholds") or {}).get("discovery")
    lo = min([thr] if thr is not None else [0.5]) - 0.02
    bins = np.linspace(max(0.0, lo), 1.0, 41)
    reason = rejected["reason"] if "reason" in rejected else pd.Series("no_ore", index=rejected.index)
    groups = [("detections", detections["probability"], "#d95f02"),
              ("rejected: no ore", rejected.loc[reason == "no_ore", "probability"], "#888888"),
              ("removed: isolated", rejected.loc[reason == "isolated", "probability"], "#5e3c99")]
    data = [g[1].to_numpy(dtype=float) for g in groups]
    if sum(len(d) for d in data) == 0:
        _empty(ax, "no candidate")
    else:
        ax.hist(data, bins=bins, stacked=True, color=[g[2] for g in groups],
                label=[f"{g[0]} ({len(d)})" for g, d in zip(groups, data, strict=True)])
        ax.set_yscale("log")
        ax.set_xlabel("discovery probability (per detection cell)")
        ax.set_ylabel("cells")
        ymax = ax.get_ylim()[1]
        if thr is not None:
            ax.axvline(thr, color="k", ls="--", lw=1)
            ax.text(thr, ymax, f" main cut-off {thr:g}", va="top", fontsize=8)
        prior = summary.get("spatial_prior") or {}
        if prior.get("enabled"):
            t = prior["isolated_threshold"]
            ax.axvline(t, color="#5e3c99", ls=":", lw=1.5)
            ax.text(t, ymax / 3, f" isolated cut-off {t:g}\n (k={prior['isolation_k']}, "
                    f"{prior['isolation_km']:g} km)", va="top", fontsize=8, color="#5e3c99")
        ax.legend(frameon=False, fontsize=8, loc="upper center")
        ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("candidate probabilities")
    fig.tight_layout()
    _save(fig, path)


def plot_model_metrics(cards: dict[str, dict], path) -> None:
    kinds = [k for k in ("discovery", "impact") if k in cards]
    fig = Figure(figsize=(4.6 * max(1, len(kinds)), 4.0))
    axes = fig.subplots(1, max(1, len(kinds)), squeeze=False)
    if not kinds:
        _empty(axes[0, 0], "no model card")
    for ax, kind in zip(axes[0], kinds, strict=False):
        card = cards[kind]
        m = card.get("metrics") or {}
        cm = m.get("confusion_matrix_total")
        classes = card.get("classes") or []
        name = card.get("name", kind)
        if not cm:
            _empty(ax, f"{name}: no cross-validation metrics in the card")
            ax.set_title(f"{kind}: {name}")
            continue
        cm = np.asarray(cm, dtype=float)
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, f"{int(v)}", ha="center", va="center", color="white" if rates[i, j] > 0.6 else "black")
        labels = classes if len(classes) == cm.shape[0] else [str(i) for i in range(cm.shape[0])]
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        folds = len(m.get("folds") or [])
        acc, f1 = m.get("mean_accuracy"), m.get("mean_f1")
        stats = ", ".join(s for s in (f"acc {acc:.3f}" if acc is not None else "",
                                      f"F1 {f1:.3f}" if f1 is not None else "",
                                      f"{folds}-fold CV" if folds else "") if s)
        ax.set_title(f"{kind}: {name}\n{stats}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def summary_table(summary: dict, layers: dict | None) -> pd.DataFrame:
    ev = summary.get("evaluation") or {}
    prior = summary.get("spatial_prior") or {}
    rows = [("region", summary.get("region")), ("period", summary.get("period")),
            ("area scanned (km2)", summary.get("area_scanned_km2")), ("tiles", summary.get("tiles")),
            ("candidate cells", summary.get("candidates")), ("detected cells", summary.get("detections")),
            ("rejected as no ore", summary.get("rejected_no_ore")),
            ("removed as isolated (spatial prior)", prior.get("candidates_removed", 0) if prior.get("enabled")
             else "off"),
            ("sites", summary.get("sites")), ("site area, detected cells (ha)", summary.get("site_area_ha"))]
    if "site_area_ha_segmented" in summary:
        rows.append(("site area, segmented extents (ha)", summary["site_area_ha_segmented"]))
    for k, v in sorted((summary.get("sites_by_impact") or {}).items()):
        rows.append((f"sites, {k} impact", v))
    if layers:
        r = layers.get("registry") or {}
        if r.get("checked"):
            rows += [("registered sites", r.get("registered_sites")),
                     ("unregistered sites", r.get("unregistered_sites")),
                     ("unregistered area (ha, segmented extents)" if layers.get("area_basis") == "segmented"
                      else "unregistered area (ha, detected cells)", r.get("unregistered_area_ha"))]
        o = layers.get("overlays") or {}
        if o.get("layers"):
            rows += [("sites in protected/overlay areas", o.get("sites_in_areas")),
                     ("unregistered sites in those areas", o.get("unregistered_sites_in_areas"))]
    if ev:
        rows += [("site-level recall (truth)", ev.get("recall")), ("site-level precision (truth)", ev.get("precision"))]
    for kind, mdl in sorted((summary.get("models") or {}).items()):
        rows.append((f"{kind} model", f"{mdl.get('name')} ({mdl.get('version')})"))
    return pd.DataFrame(rows, columns=["item", "value"])


def make_plots(outdir, *, summary_path, detections_path, rejected_path, sites_path=None, layers_path=None,
               areas_path=None, cards: dict[str, str] | None = None) -> list[Path]:
    """Write the four plots and the summary table into ``outdir``; return their paths."""
    outdir = Path(outdir)
    summary = json.loads(Path(summary_path).read_text())
    layers = json.loads(Path(layers_path).read_text()) if layers_path else None
    det = pd.read_csv(detections_path)
    rej = pd.read_csv(rejected_path)
    if sites_path:
        sites = pd.DataFrame(read_sites(sites_path).drop(columns="geometry"))
    else:
        sites = pd.DataFrame(columns=["impact"])
    areas = pd.read_csv(areas_path) if areas_path else pd.DataFrame(columns=["name", "kind"])
    model_cards = {k: json.loads(Path(p).read_text()) for k, p in (cards or {}).items() if p}
    paths = [outdir / name for name in PLOTS]
    plot_detections_by_class(sites, summary, paths[0])
    plot_area_by_area(areas, paths[1], (layers or {}).get("area_basis", "cells"))
    plot_probability_histogram(det, rej, summary, paths[2])
    plot_model_metrics(model_cards, paths[3])
    write_csv(summary_table(summary, layers), outdir / TABLE)
    log.info("report plots written to %s", outdir)
    return [*paths, outdir / TABLE]
