"""The cluster profiles: profiles/slurm sends the TensorFlow jobs to GPUs, profiles/slurm-cpu is the same
without GPUs, both lint and dry-run on the tiny scan with the resources they promise."""

import re
import subprocess
import sys

import pytest
import yaml
from conftest import (
    ROOT,
    bright_square_fcn,
    constant_impact_cnn,
    grid_tile,
    mine_squares,
    run_snakemake,
    save_test_model,
    write_tiny_config,
    write_tiny_scene,
)

GPU_RULES = ("detect", "classify", "detect_tile", "classify_tile", "segment")  # the TensorFlow rules of a scan


def _profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def test_gpu_profile_puts_the_tensorflow_rules_and_only_them_on_gpus():
    p = _profile("slurm")
    assert p["default-resources"]["slurm_partition"] == "cpu" and "gres" not in p["default-resources"]
    for rule, res in p["set-resources"].items():
        if rule in GPU_RULES:
            assert res["slurm_partition"] == "gpu" and res["gres"] == "gpu:1", rule
        else:
            assert "slurm_partition" not in res and "gres" not in res and "gpu" not in res, rule
    assert p["groups"] == {rule: "quadrant" for rule in GPU_RULES}


def test_cpu_profile_is_the_gpu_profile_without_the_gpus():
    gpu, cpu = _profile("slurm"), _profile("slurm-cpu")
    for rule in GPU_RULES:
        for key in ("slurm_partition", "gres"):
            del gpu["set-resources"][rule][key]
    for rule in ("detect", "detect_tile"):  # the host memory GPU-sized strips need
        assert gpu["set-resources"][rule]["mem_mb"] == "attempt * 16000"
        gpu["set-resources"][rule]["mem_mb"] = cpu["set-resources"][rule]["mem_mb"] = "attempt * 2000"
    assert cpu == gpu


def test_site_settings_are_marked_in_one_place():
    text = (ROOT / "profiles" / "slurm" / "config.yaml").read_text()
    block = text[text.index("SITE SETTINGS") : text.index("END OF SITE SETTINGS")]
    site_lines = [line for line in text.splitlines() if re.search(r"#\s*SITE\b", line)]
    assert site_lines and all(line in block for line in site_lines)
    assert all(v in block for v in ('slurm_partition: "cpu"', '"gpu"', '"gpu:1"', "slurm_account"))


@pytest.mark.parametrize("profile", ["slurm", "slurm-cpu"])
def test_cluster_profiles_run_a_tile_per_detect_job(profile):
    assert _profile(profile)["config"] == 'detect={"quadrants_per_job": "tile", "tiles_per_job": 4}'


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("profiles")
    tiles = [grid_tile(93, 1440)]
    write_tiny_scene(d, tiles, mine_squares(tiles))
    save_test_model(d / "models" / "discovery", "discovery", bright_square_fcn())
    save_test_model(d / "models" / "impact", "impact", constant_impact_cnn())
    write_tiny_config(d, d / "models" / "discovery", d / "models" / "impact")
    return d


def _jobs(dry_run: str) -> dict[str, str]:
    """rule -> resources line of its first job in a dry run's output."""
    out = {}
    for m in re.finditer(
        r"^ *rule (\w+):\n(?: +.*\n)*? +resources: (.*)$", dry_run, re.M
    ):  # grouped: indented
        out.setdefault(m.group(1), m.group(2))
    return out


@pytest.mark.parametrize("profile", ["slurm", "slurm-cpu"])
def test_profiles_dry_run_with_their_partitions_and_gpus(tiny, profile):
    r = run_snakemake(
        tiny,
        "-n",
        "results/tiny/2026Q1/summary.json",
        profile_args=("--profile", str(ROOT / "profiles" / profile)),
    )
    jobs = _jobs(r.stdout + r.stderr)
    # the profiles run a tile's four quadrants in one detect job (detect.quadrants_per_job: tile)
    assert set(jobs) == {"tile", "detect_tile", "classify_tile", "merge"}, jobs
    for rule, res in jobs.items():
        on_gpu = profile == "slurm" and rule in GPU_RULES
        assert ("slurm_partition=gpu" in res) == on_gpu and ("gres=gpu:1" in res) == on_gpu, (rule, res)
        assert on_gpu or "slurm_partition=cpu" in res, (rule, res)


@pytest.mark.parametrize("profile", ["slurm", "slurm-cpu"])
def test_profiles_lint_clean(profile):
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--profile", str(ROOT / "profiles" / profile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Lints for" not in out, out[-4000:]


@pytest.mark.parametrize("profile", ["slurm", "slurm-cpu"])
def test_a_batch_of_tiles_asks_for_what_a_tile_job_asks_for(tmp_path, profile):
    """detect.tiles_per_job: the batch rules are named per batch, so they take detect_tile's resources and
    group from the profile (partition, GPU, memory) instead of the defaults."""
    tiles = [grid_tile(92, 1440), grid_tile(93, 1440)]
    write_tiny_scene(tmp_path, tiles, mine_squares(tiles))
    save_test_model(tmp_path / "models" / "discovery", "discovery", bright_square_fcn())
    save_test_model(tmp_path / "models" / "impact", "impact", constant_impact_cnn())
    write_tiny_config(tmp_path, tmp_path / "models" / "discovery", tmp_path / "models" / "impact",
                      detect={"block_cells": 7, "tiles_per_job": 2})
    r = run_snakemake(tmp_path, "-n", "results/tiny/2026Q1/summary.json",
                      profile_args=("--profile", str(ROOT / "profiles" / profile)))
    out = r.stdout + r.stderr
    jobs = _jobs(out)
    assert set(jobs) == {"tile", "detect_tiles_21S_E092_N1440", "classify_tiles_21S_E092_N1440", "merge"}, jobs
    assert ("slurm_partition=gpu" in jobs["classify_tiles_21S_E092_N1440"]) == (profile == "slurm")
    batch = jobs["detect_tiles_21S_E092_N1440"]
    on_gpu = profile == "slurm"
    assert ("slurm_partition=gpu" in batch) == on_gpu and ("gres=gpu:1" in batch) == on_gpu, batch
    assert on_gpu or "slurm_partition=cpu" in batch, batch
    mem = {m.group(1) for m in re.finditer(r"\bmem_mb=(\d+)", batch)}
    assert mem == {"16000" if on_gpu else "2000"}, batch  # detect_tile's attempt * 16000 (2000 without GPUs)
    # grouped with its tiles' classify jobs as a tile job is (the profile's group "quadrant"): one SLURM
    # job; a dry run indents the rules of a group job
    assert re.search(r"^ +rule detect_tiles_21S_E092_N1440:$", out, re.M), out[-3000:]
    assert re.search(r"^ +rule classify_tiles_21S_E092_N1440:$", out, re.M), out[-3000:]
