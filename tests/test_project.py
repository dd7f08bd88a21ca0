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


def test_conda_env_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "minescan.yaml").read_text())
    listed = {}
    for item in env["dependencies"]:
        entries = item["pip"] if isinstance(item, dict) else [item]
        for entry in entries:
            if not entry.startswith("-"):
                name, spec = _name_and_spec(entry)
                listed[name] = spec
    for req in deps:
        name, spec = _name_and_spec(req)
        assert name in listed, f"{name} is in pyproject.toml but not in envs/minescan.yaml"
        assert listed[name] == spec, f"{name}: pyproject says '{spec}', envs/minescan.yaml says '{listed[name]}'"


def test_ruff_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "docs"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakemake_lint_clean():
    r = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--cores", "1"], cwd=ROOT,
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Lints for" not in out, out[-4000:]
