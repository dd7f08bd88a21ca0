"""The classify job's copy path (minescan.scan.classify_copy, issue 19): on candidates the detect job rated
with this very impact model it writes the very bytes run_classify writes, without importing pandas or
rasterio; anything it is not sure of goes the pandas way."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys

import keras
import pytest
from conftest import bright_square_fcn, grid_tile, save_test_model, write_scene
from shapely.geometry import box

from minescan import SENTINEL2_BANDS
from minescan.cli import run
from minescan.grid import TILE_ID_RE, TileId, to_crs
from minescan.models.networks import build_impact_cnn
from minescan.models.store import load_model
from minescan.scan.classify_copy import NA_VALUES, copy_rated, tile_name
from minescan.scan.detect import lazy_model, run_classify, run_detect
from minescan.sources.local import make_tile


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    """Real detect outputs, rated in the detect job: NW with many candidates, SW with none."""
    d = tmp_path_factory.mktemp("classify_copy")
    t = grid_tile()
    c0, r0, _, _ = t.core_px()
    squares = [(c0 + 40, r0 + 60, c0 + 100, r0 + 110), (c0 + 200, r0 + 190, c0 + 260, r0 + 250)]  # both NW
    make_tile(t, [write_scene(d / "scene.tif", [t], squares=squares)], list(SENTINEL2_BANDS), d / "tile.tif")
    keras.utils.set_random_seed(5)
    fcn = load_model(save_test_model(d / "bright", "discovery", bright_square_fcn()))
    impact = load_model(save_test_model(d / "impact", "impact", build_impact_cnn(12)))
    region = to_crs(box(*t.core_bounds), t.id.epsg, 4326)
    for q in ("NW", "SW"):
        run_detect(d / "tile.tif", t, q, fcn, region, 1e-4, None, None, d / q / "p.tif", d / q / "c.csv",
                   impact=impact)
    return t, d, impact


def _table(path):
    rows = list(csv.reader(path.read_text().splitlines()))
    return rows[0], rows[1:]


def _write(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(r) + "\n" for r in [header, *rows]))
    return path


def _variant(name, header, rows):
    """The NW detect output, edited: the cases the copy must reproduce as pandas reads and writes them."""
    col = {c: i for i, c in enumerate(header)}
    rows = [list(r) for r in rows]
    if name == "one":
        rows = rows[:1]
    elif name == "numeric_tile":  # text columns that look like numbers stay text (read as str)
        for i, r in enumerate(rows):
            r[col["tile"]] = "0100" if i % 2 else "12"
            r[col["quadrant"]] = "7"
    elif name == "extra_columns":  # numbers pandas rewrites: '007' is 7, an int among floats 5.0
        header = [*header[:3], "n", "mixed", "label", *header[3:]]
        rows = [[*r[:3], f"{i:03d}", "5" if i % 2 else "2.5e-3", f"a{i}", *r[3:]] for i, r in enumerate(rows)]
    elif name == "ties":  # class counts of equal size: listed in order of first appearance, as pandas does
        for i, r in enumerate(rows):
            r[col["impact"]] = ("no_ore", "low", "high")[i % 3]
    elif name == "shuffled":  # the ratings before the candidate columns: written last, in the fixed order
        order = [col["impact_model"], col["p_no_ore"], col["impact"], col["p_high"], col["p_low"]]
        order += [i for i in range(len(header)) if i not in order]
        header, rows = [header[i] for i in order], [[r[i] for i in order] for r in rows]
    return header, rows


@pytest.mark.parametrize("name", ["many", "one", "none", "numeric_tile", "extra_columns", "ties", "shuffled"])
def test_copy_writes_the_bytes_and_log_lines_of_run_classify(detected, tmp_path, caplog, name):
    t, d, impact = detected
    header, rows = _table(d / ("SW" if name == "none" else "NW") / "c.csv")
    assert "impact_model" in header and (len(rows) == 0) == (name == "none")
    if name == "many":
        assert len(rows) > 10
    cands = _write(tmp_path / "c.csv", *_variant(name, header, rows))
    with caplog.at_level(logging.INFO, logger="minescan.scan.detect"):
        want = run_classify(d / "tile.tif", t, lazy_model(impact.path, "impact"), 1e-4, cands, tmp_path / "want.csv")
        want_log = [r.getMessage() for r in caplog.records]
        caplog.clear()
        got = copy_rated(cands, tmp_path / "got.csv", impact.path, t.name)
        got_log = [r.getMessage() for r in caplog.records]
    assert got is not None, "the copy path must apply"
    assert (tmp_path / "got.csv").read_bytes() == (tmp_path / "want.csv").read_bytes()
    assert got == want and list(got) == list(want)
    assert got_log == want_log and f"classified {len(rows) if name != 'one' else 1} candidates" in got_log[-1]


def test_a_row_rated_by_another_model_falls_back_and_is_rated(detected, tmp_path):
    t, d, impact = detected
    header, rows = _table(d / "NW" / "c.csv")
    rows[3][header.index("impact_model")] = "0123456789ab"
    cands = _write(tmp_path / "c.csv", header, rows)
    assert copy_rated(cands, tmp_path / "got.csv", impact.path, t.name) is None
    assert not (tmp_path / "got.csv").exists()
    # the command then rates them all with the network: the same as the ratings made in detect; in one
    # process with another quadrant's candidates (a tile's classify job), whose ratings it copies
    assert run(["classify", "--tile", t.name, "--tile-path", str(d / "tile.tif"), "--model", str(impact.path),
                "--candidates", str(cands), str(d / "NW" / "c.csv"), "--out", str(tmp_path / "k.csv"),
                str(tmp_path / "copied.csv"), "--tile-px", str(t.grid.tile_px), "--halo-px", str(t.grid.halo_px)]) == 0
    run_classify(d / "tile.tif", t, lazy_model(impact.path, "impact"), 1e-4, d / "NW" / "c.csv", tmp_path / "ref.csv")
    assert (tmp_path / "copied.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    got, ref = _table(tmp_path / "k.csv"), _table(tmp_path / "ref.csv")
    assert got[0] == ref[0]
    for a, b in zip(got[1], ref[1], strict=True):
        assert [float(x) for x in a[-4:-1]] == pytest.approx([float(x) for x in b[-4:-1]], abs=2e-6)


HEADER = "cell_x,zone,tile,probability,p_high,p_low,p_no_ore,impact,impact_model"
ROW = "5,21S,21S-E093-N1440,0.75,0.2,0.7,0.1,low,{v}"


@pytest.mark.parametrize("text", [
    "",  # empty file
    "cell_x,zone,tile,probability,p_high,p_low,p_no_ore,impact\n5,21S,x,0.75,0.2,0.7,0.1,low\n",  # not rated
    "cell_x,zone,probability,impact_model\n5,21S,0.75,{v}\n",  # no ratings
    HEADER + "\n" + ROW + "\n\n" + ROW + "\n",  # a blank line
    HEADER + "\n" + ROW.replace(",low,", ',"low",') + "\n",  # quotes
    HEADER + "\n" + ROW.replace("0.75", "0.74999999999999999") + "\n",  # beyond pandas' exact digits
    HEADER + "\n" + ROW.replace("0.75", "NA") + "\n",  # a missing value
    HEADER + "\n" + ROW.replace("21S-E093-N1440", "NA") + "\n",  # ... in a text column
    HEADER + "\n" + ROW.replace(",low,", ",True,") + "\n",  # a boolean
    HEADER + "\n" + ROW.replace("5,", "+5,", 1) + "\n",  # a number pandas and this module may read apart
    HEADER + "\n" + ROW + ",extra\n",  # a row longer than the header
    HEADER.replace("zone", "cell_x") + "\n" + ROW + "\n",  # a repeated column name
    HEADER + "\r\n" + ROW + "\r\n",  # CR LF
])
def test_anything_unusual_falls_back(detected, tmp_path, text):
    t, d, impact = detected
    (tmp_path / "c.csv").write_text(text.format(v=impact.version))
    assert copy_rated(tmp_path / "c.csv", tmp_path / "got.csv", impact.path, t.name) is None
    assert not (tmp_path / "got.csv").exists()


def test_the_plain_table_of_those_cases_is_copied(detected, tmp_path):
    """The row the fallback cases above spoil is itself copied (so each of them tests its own spoiling)."""
    t, d, impact = detected
    (tmp_path / "c.csv").write_text(f"{HEADER}\n{ROW}\n".format(v=impact.version))
    assert copy_rated(tmp_path / "c.csv", tmp_path / "got.csv", impact.path, t.name) == {"low": 1}
    assert (tmp_path / "got.csv").read_text() == ("cell_x,zone,tile,probability,p_high,p_low,p_no_ore,impact\n"
                                                  "5,21S,21S-E093-N1440,0.75,0.2,0.7,0.1,low\n")


_CLI = """import sys
from minescan.cli import run
code = run(sys.argv[1:])
print(code, 'pandas' in sys.modules, 'rasterio' in sys.modules)
"""


def _classify_subprocess(t, d, model, cands, out):
    args = ["classify", "--tile", t.name, "--tile-path", str(d / "tile.tif"), "--model", str(model),
            "--candidates", str(cands), "--out", str(out), "--tile-px", str(t.grid.tile_px),
            "--halo-px", str(t.grid.halo_px)]
    r = subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.split()[-3:]


def test_classify_command_copies_without_importing_pandas_or_rasterio(detected, tmp_path):
    t, d, impact = detected
    assert _classify_subprocess(t, d, impact.path, d / "NW" / "c.csv", tmp_path / "k.csv") == ["0", "False", "False"]
    run_classify(d / "tile.tif", t, lazy_model(impact.path, "impact"), 1e-4, d / "NW" / "c.csv", tmp_path / "ref.csv")
    assert (tmp_path / "k.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    # the same check sees the pandas path: candidates detect did not rate
    _write(tmp_path / "plain.csv", ["cell_x", "cell_y", "zone", "tile", "quadrant"], [])
    assert _classify_subprocess(t, d, impact.path, tmp_path / "plain.csv", tmp_path / "k2.csv") == \
        ["0", "True", "True"]


def test_wrong_model_kind_is_refused_as_before(detected, tmp_path):
    t, d, impact = detected
    from minescan.errors import ModelError

    with pytest.raises(ModelError, match="expected 'impact'"):
        copy_rated(d / "NW" / "c.csv", tmp_path / "got.csv", d / "bright", t.name)


def test_kept_in_step_with_grid_and_pandas():
    from pandas._libs.parsers import STR_NA_VALUES

    assert NA_VALUES == STR_NA_VALUES
    from minescan.scan import classify_copy

    assert classify_copy.TILE_ID_RE.pattern == TILE_ID_RE.pattern
    for text in ("21S-E005-N0100", "07N-E0045-N00951", "21S-E93-N1440", "21X-E005-N0100", "21S-E005-N0100\n"):
        try:
            want = str(TileId.parse(text))
        except Exception:
            want = None
        assert tile_name(text) == want, text


def test_classify_needs_one_output_per_candidates_file(detected, tmp_path, capsys):
    t, d, impact = detected
    assert run(["classify", "--tile", t.name, "--tile-path", str(d / "tile.tif"), "--model", str(impact.path),
                "--candidates", str(d / "NW" / "c.csv"), str(d / "NW" / "c.csv"), "--out", str(tmp_path / "k.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["minescan: error: classify: 2 --candidates but 1 --out paths (one each per quadrant)"]
    assert not (tmp_path / "k.csv").exists()
