"""Project hygiene: the conda env matches pyproject, the code is ruff-clean, the workflow lint-clean."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name_and_spec(req: str):
    m = re.match(r"^([A-Za-z0-9_.-]+)(.*)$", req.strip())
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _env_listing(name: str) -> dict[str, str]:
    env = yaml.safe_load((ROOT / "envs" / name).read_text())
    listed = {}
    for item in env["dependencies"]:
        entries = item["pip"] if isinstance(item, dict) else [item]
        for entry in entries:
            if not entry.startswith("-"):
                name, spec = _name_and_spec(entry)
                listed[name] = spec
    return listed


def test_conda_env_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = _env_listing("minescan.yaml")
    for req in deps:
        name, spec = _name_and_spec(req)
        assert name in listed, f"{name} is in pyproject.toml but not in envs/minescan.yaml"
        assert listed[name] == spec, f"{name}: pyproject says '{spec}', envs/minescan.yaml says '{listed[name]}'"


def test_gpu_env_is_the_cpu_env_with_the_gpu_extra():
    """envs/minescan-gpu.yaml (detect/classify under --use-conda) = envs/minescan.yaml with pyproject's `gpu`
    extra (TensorFlow with CUDA) in place of tensorflow-cpu, at the same version bounds."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (gpu,) = project["optional-dependencies"]["gpu"]
    cpu, gpu_env = _env_listing("minescan.yaml"), _env_listing("minescan-gpu.yaml")
    gname, gspec = _name_and_spec(gpu)
    assert gname == "tensorflow" and gspec == "[and-cuda]" + cpu.pop("tensorflow-cpu") == gpu_env.pop(gname)
    assert gpu_env == cpu
    rules = {r: (ROOT / "rules" / f"{r}.smk").read_text() for r in ("detect", "classify", "merge")}
    assert "ENV_GPU" in rules["detect"] and "ENV_GPU" in rules["classify"] and "ENV_GPU" not in rules["merge"]
    assert (ROOT / "envs" / "minescan-gpu.post-deploy.sh").exists()


def test_ruff_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "docs"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakemake_lint_clean():
    r = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--cores", "1"], cwd=ROOT,
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Lints for" not in out, out[-4000:]
