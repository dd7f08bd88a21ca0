from pathlib import Path

import pytest
import yaml

from minescan import config as cfgmod
from minescan.errors import ConfigError
from minescan.periods import period_dates

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_filled_in():
    cfg = cfgmod.validate({"region": {"name": "x", "file": "r.geojson"}, "periods": ["2026"]})
    assert cfg["grid"] == {"tile_px": 9216, "resolution_m": 10, "halo_px": 160}
    assert cfg["detect"]["threshold"] is None and cfg["source"]["kind"] == "demo"
    assert cfg["train"]["discovery"] is None


@pytest.mark.parametrize("period,dates", [("2026Q1", ("2026-01-01", "2026-04-01")),
                                          ("2026Q4", ("2026-10-01", "2027-01-01")),
                                          ("2025", ("2025-01-01", "2026-01-01"))])
def test_period_dates(period, dates):
    assert period_dates(period) == dates


def test_bad_period_and_odd_tile():
    with pytest.raises(ConfigError, match="periods.0"):
        cfgmod.validate({"region": {"name": "x", "file": "r"}, "periods": ["2026Q5"]})
    with pytest.raises(ConfigError, match="grid.tile_px' must be even"):
        cfgmod.validate({"region": {"name": "x", "file": "r"}, "periods": ["2026"], "grid": {"tile_px": 1001}})


def test_shipped_configs_are_valid():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        cfgmod.validate(raw, str(path))


def test_every_config_key_is_documented_in_schema_and_readme():
    readme = (ROOT / "README.md").read_text()
    missing = []

    def walk(node, prefix):
        node = cfgmod._resolve(node, cfgmod.schema())
        for key, sub in node.get("properties", {}).items():
            sub_r = cfgmod._resolve(sub, cfgmod.schema())
            path = f"{prefix}{key}"
            if "description" not in sub_r and "properties" not in sub_r:
                missing.append(f"{path} (no description in schema)")
            if f"`{path}`" not in readme:
                missing.append(f"{path} (not in README)")
            walk(sub_r, path + ".")

    walk(cfgmod.schema(), "")
    assert not missing, "undocumented config keys: " + ", ".join(missing)


def test_readme_config_reference_is_current():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    assert start in readme and end in readme
    block = readme.split(start, 1)[1].split(end, 1)[0]
    assert block.strip() == cfgmod.reference_markdown().strip(), (
        "README's config reference is stale: regenerate it with `minescan config-reference`")


def test_text_values_from_snakemake_config_become_what_the_schema_wants():
    """``--config 'detect={"tiles_per_job": 4}'`` reaches the config as text ("4"): numbers, booleans and
    null spelled as text are read as such where the schema takes no text; other text still fails by name."""
    from minescan.config import validate
    from minescan.errors import ConfigError

    base = {"region": {"name": "r", "file": "r.geojson"}, "periods": ["2026Q1"]}
    cfg = validate({**base, "detect": {"tiles_per_job": "4", "threshold": "0.55", "max_block_mb": "null",
                                       "require_gpu": "true", "quadrants_per_job": "tile"}})
    d = cfg["detect"]
    assert d["tiles_per_job"] == 4 and isinstance(d["tiles_per_job"], int)
    assert d["threshold"] == 0.55 and d["max_block_mb"] is None and d["require_gpu"] is True
    assert d["quadrants_per_job"] == "tile"
    assert validate({**base, "region": {"name": "12", "file": "r.geojson"}})["region"]["name"] == "12"  # text stays
    with pytest.raises(ConfigError, match=r"key 'detect.tiles_per_job': 'four' is not of type 'integer'"):
        validate({**base, "detect": {"tiles_per_job": "four"}})
    with pytest.raises(ConfigError, match=r"key 'detect.tiles_per_job': 0 is less than the minimum of 1"):
        validate({**base, "detect": {"tiles_per_job": "0"}})
