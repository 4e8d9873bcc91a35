"""environment.yml mirrors pyproject.toml: same packages, same version specifiers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: PyPI name -> conda-forge name, where they differ.
CONDA_NAME = {"torch": "pytorch"}
IGNORED_CONDA = {"python", "pip"}


def normalise(name: str) -> str:
    return re.sub(r"[-_]+", "-", name.strip()).lower()


def split(requirement: str) -> tuple[str, frozenset[str]]:
    """``"numpy>=2,<2.5"`` -> ``("numpy", {">=2", "<2.5"})``. Markers and extras are not used here."""
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*", requirement)
    assert m, f"cannot parse requirement {requirement!r}"
    name, spec = m.groups()
    assert not spec.startswith(("[", ";", "@")), f"unsupported requirement form {requirement!r}"
    clauses = frozenset(c.replace(" ", "") for c in spec.split(",") if c.strip())
    return normalise(name), clauses


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def environment() -> dict:
    with open(ROOT / "environment.yml") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def pip_requirements(pyproject) -> dict[str, frozenset[str]]:
    """Every dependency and extra of pyproject.toml, by conda name."""
    project = pyproject["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    out = {}
    for r in reqs:
        name, spec = split(r)
        name = normalise(CONDA_NAME.get(name, name))
        assert name not in out, f"{name} listed twice in pyproject.toml"
        out[name] = spec
    return out


@pytest.fixture(scope="module")
def conda_requirements(environment) -> dict[str, frozenset[str]]:
    out = {}
    for dep in environment["dependencies"]:
        if isinstance(dep, dict):  # the pip: sub-list
            assert set(dep) == {"pip"}, f"unexpected entry {dep!r}"
            continue
        name, spec = split(dep)
        if name in IGNORED_CONDA:
            continue
        assert name not in out, f"{name} listed twice in environment.yml"
        out[name] = spec
    return out


def test_split():
    assert split("numpy>=2,<2.5") == ("numpy", frozenset({">=2", "<2.5"}))
    assert split("Cuda_Bindings >= 12.6") == ("cuda-bindings", frozenset({">=12.6"}))
    assert split("pip") == ("pip", frozenset())


def test_files_parse(pyproject, environment, pip_requirements, conda_requirements):
    assert pyproject["project"]["name"] == "dlrmlab"
    assert "conda-forge" in environment["channels"]
    assert pip_requirements and conda_requirements


def test_every_pyproject_dependency_is_in_environment(pip_requirements, conda_requirements):
    missing = sorted(set(pip_requirements) - set(conda_requirements))
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"


def test_every_environment_dependency_is_in_pyproject(pip_requirements, conda_requirements):
    extra = sorted(set(conda_requirements) - set(pip_requirements))
    assert not extra, f"in environment.yml but not pyproject.toml: {extra}"


def test_version_specifiers_match(pip_requirements, conda_requirements):
    differ = {
        name: (sorted(spec), sorted(conda_requirements[name]))
        for name, spec in pip_requirements.items()
        if name in conda_requirements and conda_requirements[name] != spec
    }
    assert not differ, f"specifiers differ (pyproject, environment.yml): {differ}"


def test_python_version_matches(pyproject, environment):
    pythons = [split(d)[1] for d in environment["dependencies"] if isinstance(d, str) and split(d)[0] == "python"]
    assert pythons == [split("python" + pyproject["project"]["requires-python"])[1]]


def test_environment_installs_the_package(environment):
    pip = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict)]
    assert pip and any(line.replace(" ", "") in ("-e.", ".") for line in pip[0])


def test_console_script_target_exists(pyproject):
    import importlib

    target = pyproject["project"]["scripts"]["dlrmlab"]
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))
