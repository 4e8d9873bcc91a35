"""The layers are declared once for people (README.md, Architecture) and once for the linter (pyproject.toml,
``[tool.importlinter]``; ``lint-imports`` in CI enforces them): both name the same layers, in the same order,
and every module of dlrmlab/ has one, so a new module without a layer fails here."""

from __future__ import annotations

import re
import tomllib

from helpers import ROOT

PACKAGE = ROOT / "dlrmlab"


def _modules() -> set[str]:
    """Every module of the package, dotted; a package by its own name (its ``__init__``)."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _contract_layers() -> list[set[str]]:
    """The layers contract's layers, bottom to top."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [{m.strip() for m in re.split(r"[:|]", layer)} for layer in reversed(layers)]


def _readme_layers() -> list[set[str]]:
    """The Architecture table's rows, in the table's (bottom to top) order: the modules column, as dotted names."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("|")][2:]
    return [{"dlrmlab." + name.removesuffix(".py").strip("/").replace("/", ".")
             for name in re.findall(r"`([^`]+)`", row[2])} for row in rows]  # fmt: skip


def _covered(module: str, names: set[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def test_readme_table_and_contracts_name_the_same_layers_in_the_same_order():
    assert _readme_layers() == _contract_layers()


def test_every_module_has_a_layer():
    declared = set().union(*_contract_layers())
    assert declared <= _modules(), f"layers name modules that do not exist: {sorted(declared - _modules())}"
    missing = []
    for module in sorted(_modules() - {"dlrmlab"}):
        children = {m for m in _modules() if m.startswith(module + ".")}
        # a package whose modules sit in different layers (report/) is covered by them
        if not _covered(module, declared) and not (children and all(_covered(c, declared) for c in children)):
            missing.append(module)
    assert not missing, f"modules in no layer (add them to README.md's Architecture and pyproject.toml): {missing}"
