"""``minescan gee plan/check/tile/chips`` and the Snakemake rule, against fakes; plus the one live test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from test_gee_auth import PEM, SECRET, sa_key
from test_gee_fakes import BANDS, FakeEE, expected_tile

import minescan.sources.gee as gee_pkg
from minescan import config as cfgmod
from minescan.cli import main
from minescan.scan.plan import scan_plan
from minescan.sources.gee import auth as auth_mod
from minescan.sources.gee.settings import GeeSettings
from minescan.sources.gee.tiles import acquire_tile

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def write_config(tmp_path, key: str | None = None, **gee) -> Path:
    cfg = {"region": {"name": "demo", "file": str(ROOT / "config" / "demo_region.geojson")},
           "periods": ["2026Q1", "2025"], "results_dir": str(tmp_path / "results"),
           "grid": {"tile_px": 512, "halo_px": 64, "resolution_m": 10},
           "source": {"kind": "gee", "gee": {**({"service_account_key": key} if key else {}), **gee}},
           "models": {"discovery": str(ROOT / "models" / "amazon-rgb48"), "impact": None}}
    path = tmp_path / "gee.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(args, capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(var, raising=False)


class NoEE:
    def __getattr__(self, name):
        raise AssertionError(f"Earth Engine (ee.{name}) contacted")


@pytest.fixture
def fake_ee(monkeypatch):
    ee = FakeEE()
    monkeypatch.setattr(gee_pkg, "_EE", ee)
    monkeypatch.setattr(auth_mod, "load_credentials", lambda auth: "CREDS")
    return ee


# ------------------------------------------------------------------------------------------ plan
def test_plan_includes_the_periods_of_a_schedule(tmp_path, capsys, monkeypatch, no_credentials):
    """`gee plan` sees a config's periods as the Snakefile does: periods + schedule, expanded once by the
    config loader (a schedule-only config used to give an empty plan)."""
    monkeypatch.setattr(gee_pkg, "_EE", NoEE())
    cfg_path = write_config(tmp_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["periods"] = []
    cfg["schedule"] = {"every": "quarter", "from": "2025Q3", "to": "2025Q4"}
    cfg_path.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli(["gee", "plan", "--config", str(cfg_path), "--json"], capsys)
    assert code == 0, err
    assert [p["period"] for p in json.loads(out)["periods"]] == ["2025Q3", "2025Q4"]


def test_plan_counts_tiles_pixels_and_requests_without_network(tmp_path, capsys, monkeypatch, no_credentials):
    monkeypatch.setattr(gee_pkg, "_EE", NoEE())
    cfg_path = write_config(tmp_path)
    cfg = cfgmod.load(cfg_path)
    tiles = scan_plan(cfg).tiles
    # one tile already fetched: the plan says it is cached
    first = scan_plan(cfg).tile(tiles[0])
    acquire_tile(first, "2026Q1", GeeSettings.from_config(cfg), tmp_path / "x.tif", ee=FakeEE())

    code, out, err = run_cli(["gee", "plan", "--config", str(cfg_path), "--json"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    # the config's periods as every command sees them: expanded by the loader, oldest first
    assert [p["period"] for p in plan["periods"]] == ["2025", "2026Q1"]
    assert plan["periods"][0]["start"] == "2025-01-01" and plan["periods"][0]["end_exclusive"] == "2026-01-01"
    t = plan["periods"][1]["tiles"][0]
    assert t["tile"] == tiles[0] and (t["width"], t["height"], t["pixels"]) == (640, 640, 640 * 640)
    assert t["cached"] and t["requests"] == 0
    other = plan["periods"][0]["tiles"][0]
    assert not other["cached"] and other["requests"] == 1 and other["crs_transform"][0] == 10.0
    assert plan["totals"]["jobs"] == 2 * len(tiles) and plan["totals"]["cached"] == 1
    assert plan["totals"]["requests"] == 2 * len(tiles) - 1

    code, out, err = run_cli(["gee", "plan", "--config", str(cfg_path), "--show-expression"], capsys)
    assert code == 0
    assert f"{len(tiles)} tiles, 1 cached" in out and "2025-01-01 .. 2026-01-01" in out
    assert "ee.ImageCollection('COPERNICUS/S2_HARMONIZED').filterDate('2025-01-01', '2026-01-01')" in out
    assert "Cloud Score+ cs_cdf >= 0.6" in out and "requests" in out


def test_plan_for_a_national_grid_and_qa60_warning(tmp_path, capsys, no_credentials):
    cfg = yaml.safe_load(write_config(tmp_path, cloud_mask="qa60").read_text())
    cfg["grid"] = {"tile_px": 9216, "halo_px": 160, "resolution_m": 10}
    cfg["periods"] = ["2023"]
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(cfg))
    points = tmp_path / "pts.csv"
    pd.DataFrame({"lon": [-56.0, -55.9], "lat": [-4.5, -4.6], "class": [1, 0]}).to_csv(points, index=False)
    code, out, err = run_cli(["gee", "plan", "--config", str(path), "--points", str(points)], capsys)
    assert code == 0, err
    assert "9536x9536 px" in out and "57 request(s)" in out  # 2.2 GB tiles in blocks of <= 48 MiB
    assert "WARNING" in out and "QA60 is empty" in out
    assert "chips: 2 points (centre scheme), sizes 201, 21 px, 2 computePixels requests" in out


# ------------------------------------------------------------------------------------------ check
def test_check_offline_and_missing_or_bad_credentials(tmp_path, capsys, no_credentials):
    code, out, err = run_cli(["gee", "check", "--config", str(write_config(tmp_path)), "--offline"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no Earth Engine credentials found" in err and "GOOGLE_APPLICATION_CREDENTIALS" in err

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "service_account", "private_key": SECRET, "client_email": "a@b",
                               "token_uri": "t", "project_id": "p"}))
    code, out, err = run_cli(["gee", "check", "--config", str(write_config(tmp_path, str(bad))), "--offline"], capsys)
    assert code == 2 and "not a PEM key" in err and SECRET not in err + out

    key = sa_key(tmp_path)
    code, out, err = run_cli(["gee", "check", "--config", str(write_config(tmp_path, key)), "--offline"], capsys)
    assert code == 0 and "scanner@key-project" in out and "project: key-project" in out
    assert SECRET not in out + err and "BEGIN PRIVATE" not in out + err


def test_check_online_refusal_is_one_line_without_secrets(tmp_path, capsys, no_credentials, monkeypatch):
    monkeypatch.setattr(gee_pkg, "_EE", FakeEE(init_error=RuntimeError(f"invalid_grant for key {PEM!r}")))
    monkeypatch.setattr(auth_mod, "load_credentials", lambda auth: "CREDS")
    code, out, err = run_cli(["gee", "check", "--config", str(write_config(tmp_path, sa_key(tmp_path)))], capsys)
    assert code == 2 and "Earth Engine refused" in err and err.count("\n") == 1
    assert SECRET not in err + out and "BEGIN PRIVATE" not in err


# ------------------------------------------------------------------------------------------ tile, chips
def test_tile_command_fetches_then_serves_from_cache(tmp_path, capsys, no_credentials, fake_ee, monkeypatch):
    cfg_path = write_config(tmp_path, sa_key(tmp_path), max_request_mb=1)
    cfg = cfgmod.load(cfg_path)
    plan = scan_plan(cfg)
    tile = plan.tile(plan.tiles[0])
    out = tmp_path / "scan" / f"{tile.name}.tif"
    code, _, err = run_cli(["gee", "tile", "--tile", tile.name, "--period", "2026Q1", "--config", str(cfg_path),
                            "--out", str(out)], capsys)
    assert code == 0, err
    assert fake_ee.initialized == [{"credentials": "CREDS", "url": None, "project": "key-project"}]
    assert len(fake_ee.data.requests) > 1
    with rasterio.open(out) as ds:
        assert list(ds.descriptions) == BANDS and ds.transform.almost_equals(tile.transform)
        np.testing.assert_array_equal(ds.read(), expected_tile(tile))

    # what the Snakemake job runs: --spec + grid args; the tile is cached, so no credentials nor network
    monkeypatch.setattr(gee_pkg, "_EE", NoEE())
    spec = GeeSettings.from_config(cfg).to_json()
    out2 = tmp_path / "scan2" / f"{tile.name}.tif"
    code, _, err = run_cli(["gee", "tile", "--tile", tile.name, "--period", "2026Q1", "--spec", spec,
                            "--tile-px", "512", "--halo-px", "64", "--resolution-m", "10", "--out", str(out2)], capsys)
    assert code == 0, err
    assert os.stat(out).st_ino == os.stat(out2).st_ino
    code, _, err = run_cli(["gee", "tile", "--tile", tile.name, "--period", "2026Q1", "--spec", spec,
                            "--out", str(out2)], capsys)
    assert code == 2 and "--tile-px" in err


def test_chips_command(tmp_path, capsys, no_credentials, fake_ee):
    cfg_path = write_config(tmp_path, sa_key(tmp_path))
    corners = tmp_path / "corners.csv"
    pd.DataFrame({"ll_lon": [-56.02, -55.52], "ll_lat": [-4.52, -4.02], "ur_lon": [-55.98, -55.48],
                  "ur_lat": [-4.48, -3.98], "class": ["mine", "background"], "impact": ["high", None]}
                 ).to_csv(corners, index=False)
    out = tmp_path / "chips"
    code, stdout, err = run_cli(["gee", "chips", "--config", str(cfg_path), "--points", str(corners),
                                 "--period", "2020", "--out-dir", str(out)], capsys)
    assert code == 0, err
    assert "2 points: 2 fetched" in stdout and "minescan train discovery" in stdout
    assert sorted(p.name for p in (out / "201px").glob("*.tif")) == ["p00000.tif", "p00001.tif"]
    assert sorted(p.name for p in (out / "21px").glob("*.tif")) == ["p00000.tif", "p00001.tif"]
    pts = pd.read_csv(out / "points.csv")
    assert list(pts.columns[:4]) == ["id", "lon", "lat", "side_m"] and list(pts["class"]) == [1, 0]
    code, _, err = run_cli(["gee", "chips", "--config", str(cfg_path), "--points", str(corners), "--period",
                            "2020Q5", "--out-dir", str(out)], capsys)
    assert code == 2 and "2020Q5" in err


# ------------------------------------------------------------------------------------------ Snakemake
def snakemake(args, env_extra=None, home=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "EE_PROJECT", "GOOGLE_CLOUD_PROJECT")}
    env.update(env_extra or {})
    if home:
        env["HOME"] = str(home)
    return subprocess.run([str(SNAKEMAKE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_snakemake_rule_lints_and_plans_the_tile_jobs(tmp_path):
    cfg_path = write_config(tmp_path, sa_key(tmp_path))
    lint = snakemake(["--lint", "--configfile", str(cfg_path)], home=tmp_path / "h")
    assert lint.returncode == 0 and "good condition" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    dry = snakemake(["-n", "--nolock", "--quiet", "rules", "--configfile", str(cfg_path)], home=tmp_path / "h")
    assert dry.returncode == 0, dry.stderr
    n_tiles = len(scan_plan(cfgmod.load(cfg_path)).tiles)
    line = next(ln for ln in dry.stdout.splitlines() if ln.startswith("tile_gee"))
    assert int(line.split()[1]) == 2 * n_tiles  # every tile x both periods


def test_snakefile_refuses_to_start_without_credentials(tmp_path):
    cfg_path = write_config(tmp_path)
    dry = snakemake(["-n", "--nolock", "--configfile", str(cfg_path)], home=tmp_path / "empty-home")
    assert dry.returncode != 0
    assert "no Earth Engine credentials found" in dry.stdout + dry.stderr
    assert "tile_gee" not in dry.stdout  # nothing was scheduled


# ------------------------------------------------------------------------------------------ live
def _live_auth():
    try:
        return auth_mod.resolve_auth(GeeSettings(high_volume=True))
    except Exception:
        return None


@pytest.mark.live_gee
@pytest.mark.skipif(os.environ.get("MINESCAN_LIVE_GEE") != "1" or _live_auth() is None,
                    reason="opt-in: set MINESCAN_LIVE_GEE=1 and Earth Engine credentials (EE_PROJECT + a key or "
                           "`earthengine authenticate`)")
def test_live_chip_from_earth_engine(tmp_path):
    """One 21 px chip near Itaituba (Tapajos) from the real service: the whole path, end to end."""
    from minescan.sources.gee.chips import fetch_chips, read_chip_points

    auth_mod.initialize(_live_auth())
    points = tmp_path / "p.csv"
    pd.DataFrame({"id": ["itaituba"], "lon": [-55.98], "lat": [-4.28], "class": [1]}).to_csv(points, index=False)
    settings = GeeSettings(chip_sizes=(21,), cache_dir=str(tmp_path / "cache"))
    info = fetch_chips(read_chip_points(points), "2024", settings, tmp_path / "chips")
    assert info["fetched"] == 1
    with rasterio.open(tmp_path / "chips" / "21px" / "itaituba.tif") as ds:
        data = ds.read()
    assert data.shape == (12, 21, 21) and (data > 0).mean() > 0.5 and data.max() < 20000


def test_earth_engine_errors_become_one_redacted_line(tmp_path, capsys, no_credentials, monkeypatch):
    import ee

    def failing(params):
        raise ee.EEException(f"Too many concurrent aggregations. Bearer ya29.{SECRET}")

    fake = FakeEE()
    fake.data.computePixels = failing
    monkeypatch.setattr(gee_pkg, "_EE", fake)
    monkeypatch.setattr(auth_mod, "load_credentials", lambda auth: "CREDS")
    cfg_path = write_config(tmp_path, sa_key(tmp_path), retries=0)
    plan = scan_plan(cfgmod.load(cfg_path))
    code, out, err = run_cli(["gee", "tile", "--tile", plan.tiles[0], "--period", "2026Q1", "--config",
                              str(cfg_path), "--out", str(tmp_path / "t.tif")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "Too many concurrent aggregations" in err and "rerun resumes" in err and SECRET not in err
