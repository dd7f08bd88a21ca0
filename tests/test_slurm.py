"""A small scan on a real SLURM cluster through `snakemake --profile profiles/slurm` (the GPU profile),
byte for byte equal to the same scan run locally.

The node has pretend GPUs (MINESCAN_SLURM_FAKE_GPUS: a `gpu` GRES backed by /dev/null, ...): the detect and
classify jobs go to the `gpu` partition, request and get a GPU (SLURM sets CUDA_VISIBLE_DEVICES), find that
TensorFlow cannot use it, say so in their log and run on the CPU; everything else runs on the `cpu` partition.

The cluster is the single-node one of scripts/slurm-local.sh (SLURM 22.05 from Debian, munge, no slurmdbd).
`make test` starts it before pytest when run as root and stops it after; run alone as root, this module
starts it (and stops it again) itself. Elsewhere (not root, no apt-get, or the cluster does not come up)
the test is skipped saying why, except in CI as root (CI=true), where it must run and fails instead.

Only three options are added on the command line, all for this cluster, not the workflow: poll with
squeue (there is no accounting database) and poll every few seconds instead of every 40 s.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
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
from test_incremental import snapshot_workflow

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
TILES = [grid_tile(93, 1440)]  # one tile: 3 sbatch jobs (tile, the tile's detect + classify group, merge)
OUTPUTS = ("detections.csv", "detections.kml", "rejected.csv", "sites.gpkg", "summary.json")
SLURM_ARGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
              "--seconds-between-status-checks", "2")
TIME_LIMIT_S = 1500  # the whole SLURM run; killed (with its jobs cancelled) beyond that
# the cluster this module starts when none runs (as `make test` does): 4 pretend GPUs, so the detect jobs
# of the tile run side by side, and room for the GPU profile's memory requests (announced, not real)
CLUSTER_ENV = {"MINESCAN_SLURM_FAKE_GPUS": "4", "MINESCAN_SLURM_MEM_MB": "64000"}


def _script(cmd: str, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), cmd], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **CLUSTER_ENV))


def _node_gres() -> str:
    r = subprocess.run(["timeout", "-s", "KILL", "20", "sinfo", "-h", "-N", "-o", "%G"],
                       capture_output=True, text=True)
    return r.stdout.strip()


def _our_jobs() -> list[str]:
    r = subprocess.run(["timeout", "-s", "KILL", "20", "squeue", "-h", "-t", "all", "-o", "%i %j %T"],
                       capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if " minescan_" in line]


@pytest.fixture(scope="module")
def cluster():
    must_run = os.environ.get("CI", "").lower() in ("1", "true", "yes") and os.geteuid() == 0

    def unavailable(why: str):
        if must_run:
            pytest.fail(f"local SLURM cluster unavailable in CI as root: {why}")
        pytest.skip(f"local SLURM cluster unavailable: {why}")

    if not SCRIPT.exists() or shutil.which("bash") is None:
        unavailable(f"{SCRIPT} or bash missing")
    started_here = False
    if _script("status", timeout=60).returncode != 0:
        if os.geteuid() != 0:
            unavailable("it is not running and this is not root (as root: bash scripts/slurm-local.sh install "
                        "&& bash scripts/slurm-local.sh start)")
        if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
            unavailable("SLURM is not installed and there is no apt-get to install it")
        for step in ("install", "start"):
            t0 = time.monotonic()
            r = _script(step)
            print(f"slurm-local.sh {step}: exit {r.returncode} in {time.monotonic() - t0:.1f} s\n{r.stderr[-2000:]}")
            if r.returncode != 0:
                unavailable(f"`scripts/slurm-local.sh {step}` failed: {(r.stderr or r.stdout).strip()[-1500:]}")
        started_here = True
    if "gpu" not in _node_gres():
        unavailable(f"the running cluster's node has no (pretend) GPU (gres '{_node_gres()}'): restart "
                    "it with MINESCAN_SLURM_FAKE_GPUS=4 bash scripts/slurm-local.sh start (after stop)")
    yield
    for line in _our_jobs():  # whatever a failed or killed run left queued
        if line.split()[2] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            subprocess.run(["timeout", "-s", "KILL", "20", "scancel", line.split()[0]], capture_output=True)
    if started_here:
        _script("stop")


def make_scan(d: Path, models: Path) -> Path:
    write_tiny_scene(d, TILES, mine_squares(TILES))
    # the SLURM jobs get a (pretend) GPU, so detect.runtime auto takes TensorFlow there; the local run must run
    # the same runtime for the outputs to be equal byte for byte (ONNX Runtime agrees to float round-off)
    write_tiny_config(d, models / "discovery", models / "impact", detect={"block_cells": 7, "runtime": "tensorflow"})
    return d


def test_scan_on_slurm_equals_the_local_scan(cluster, tmp_path):
    snakefile = snapshot_workflow(tmp_path / "workflow")
    models = tmp_path / "models"
    save_test_model(models / "discovery", "discovery", bright_square_fcn())
    save_test_model(models / "impact", "impact", constant_impact_cnn())
    local = make_scan(tmp_path / "local", models)
    shutil.copytree(local, tmp_path / "slurm")
    on_slurm = tmp_path / "slurm"
    target = "results/tiny/2026Q1/summary.json"

    run_snakemake(local, target, snakefile=snakefile)

    profile = snakefile.parent / "profiles" / "slurm"
    t0 = time.monotonic()
    r = subprocess.run(
        ["timeout", "-s", "KILL", str(TIME_LIMIT_S), sys.executable, "-m", "snakemake", "-s", str(snakefile),
         "--directory", str(on_slurm), "--configfile", str(on_slurm / "config.yaml"), "--profile", str(profile),
         *SLURM_ARGS, target],
        capture_output=True, text=True, cwd=snakefile.parent,
        env=dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"))
    took = time.monotonic() - t0
    log = r.stdout + r.stderr
    print(f"snakemake --profile profiles/slurm: exit {r.returncode} in {took:.0f} s")
    assert r.returncode == 0, f"SLURM run failed (exit {r.returncode}, {took:.0f} s):\n{log[-8000:]}"

    # it really went through SLURM: one sbatch per tile, one per tile's detect group (the profile's default
    # detect.quadrants_per_job: tile, so one detect_tile job and one classify_tile job grouped) and the
    # merge, each COMPLETED in SLURM's own records; the detect groups on the gpu partition with a GPU each,
    # the others on the cpu partition without
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert len(ids) == len(TILES) + len(TILES) + 1, log[-4000:]
    assert log.count("group_quadrant_classify_tile_detect_tile") >= len(TILES)
    jobs = subprocess.run(["timeout", "-s", "KILL", "20", "squeue", "-h", "-t", "all", "-j", ",".join(ids),
                           "-o", "%i|%T|%P|%b|%k"], capture_output=True, text=True).stdout.split()
    jobs = [j.split("|") for j in jobs]
    assert [j[1] for j in jobs] == ["COMPLETED"] * len(ids), jobs
    on_gpu = [j for j in jobs if j[2] == "gpu"]
    assert len(on_gpu) == len(TILES) and all("gpu" in j[3] for j in on_gpu), jobs
    assert all(j[2] == "cpu" and "gpu" not in j[3] for j in jobs if j not in on_gpu), jobs

    out_local, out_slurm = (d / "results" / "tiny" / "2026Q1" for d in (local, on_slurm))
    for name in OUTPUTS:
        assert (out_slurm / name).read_bytes() == (out_local / name).read_bytes(), f"{name} differs"
    for q in sorted(p.relative_to(out_local) for p in (out_local / "quadrants").glob("*/*.csv")):
        assert (out_slurm / q).read_bytes() == (out_local / q).read_bytes(), f"{q} differs"
    assert (on_slurm / "results" / "logs" / "tiny" / "2026Q1" / "merge.log").exists()
    # every TensorFlow job says it got a GPU it cannot use (tensorflow-cpu, /dev/null) and ran on the CPU
    logs = on_slurm / "results" / "logs" / "tiny" / "2026Q1" / "detect"
    for tile in TILES:
        text = (logs / f"{tile.name}.log").read_text()
        line = next(x for x in text.splitlines() if "device: " in x)
        assert re.search(r"device: CPU, \d+ threads; a GPU was assigned \(CUDA_VISIBLE_DEVICES=\d", line), \
            line
    summary = json.loads((out_slurm / "summary.json").read_text())
    assert summary["jobs_per_device"] == {"detect": {"CPU": 4 * len(TILES)}}
    assert (on_slurm / "results" / "benchmarks" / "tiny" / "2026Q1" / "detect" / f"{TILES[0].name}.tsv").exists()
    # and the SLURM run is complete: nothing left to do
    again = run_snakemake(on_slurm, "-n", target, snakefile=snakefile,
                          profile_args=("--profile", str(profile), *SLURM_ARGS))
    assert "Nothing to be done" in again.stdout + again.stderr
