"""environment.yml mirrors pyproject.toml: same packages, same version specifiers."""

from __future__ import annotations

import tomllib

import pytest
import yaml
from helpers import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: PyPI name -> conda-forge name, where they differ.
CONDA_NAME = {"torch": "pytorch"}
#: A pip requirement with extras -> the conda-forge line that does the same. ``numba-cuda[cu12]`` (the ``gpu``
#: extra) brings the CUDA 12 toolkit pieces as wheels; on conda-forge numba-cuda brings them itself, and
#: ``cuda-version`` picks CUDA 12.
CONDA_EQUIVALENT = {"numba-cuda[cu12]": ("cuda-version", frozenset({">=12", "<13"}))}
IGNORED_CONDA = {"python", "pip"}
#: Wheels only on PyPI (no conda-forge package): pyproject.toml lists them with platform markers.
PIP_ONLY = {"fbgemm-gpu-cpu"}


def split(requirement: str) -> tuple[str, frozenset[str]]:
    """A requirement (PEP 508, which the conda lines used here also are) as its normalised name, extras kept on
    it (``numba-cuda[cu12]``), and its version clauses; markers (pip-only wheels for some platforms) are dropped."""
    r = Requirement(requirement)
    assert r.url is None, f"unsupported requirement form {requirement!r}"
    extras = f"[{','.join(sorted(r.extras))}]" if r.extras else ""
    return canonicalize_name(r.name) + extras, frozenset(str(c) for c in r.specifier)


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
        if name in CONDA_EQUIVALENT:
            name, spec = CONDA_EQUIVALENT[name]
        name = canonicalize_name(CONDA_NAME.get(name, name))
        if name in PIP_ONLY:
            continue
        assert name not in out, f"{name} listed twice in pyproject.toml"
        out[name] = spec
    return out


def test_gpu_extra_is_numba_cuda_with_the_cuda_12_toolkit(pyproject):
    """One command sets up a GPU machine: the ``gpu`` extra is numba-cuda[cu12], same version bound."""
    project = pyproject["project"]
    base = dict(split(r) for r in project["dependencies"])
    gpu = dict(split(r) for r in project["optional-dependencies"]["gpu"])
    assert gpu == {"numba-cuda[cu12]": base["numba-cuda"]}


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


def test_readme_gpu_command_uses_the_extra():
    readme = (ROOT / "README.md").read_text()
    assert '.venv/bin/pip install -e ".[torch,gpu]" "torch==2.13.0" && .venv/bin/dlrmlab reproduce' in readme
