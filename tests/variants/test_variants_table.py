"""The variant table: one explicit dict, lookup errors, knob validation per family, GPU-only refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dlrmlab import backend, variants
from dlrmlab.errors import DlrmlabError
from dlrmlab.variants import Prepared, Variant


def _prepare(case, knobs):
    """A throwaway variant: records the knobs it was given (sorted by family)."""
    return Prepared(run=lambda i: None, result=lambda i: [], params={"fixed": 1, "seen": knobs})


@pytest.fixture
def temp_variant(monkeypatch):
    def add(name, prepare=_prepare, families=("paper",), fixed=None, **kw):
        v = Variant(name, "test only", prepare, families, fixed or {}, **kw)
        monkeypatch.setitem(variants.VARIANTS, name, v)
        return v

    return add


def test_unknown_variant_lists_valid_names():
    with pytest.raises(DlrmlabError, match="unknown variant 'nope'; valid: ") as e:
        variants.get("nope")
    assert all(n in str(e.value) for n in variants.names())
    with pytest.raises(DlrmlabError, match="unknown variant"):
        variants.prepare("nope", None)
    with pytest.raises(DlrmlabError, match="unknown variant"):
        variants.knobs_for("nope", {})
    with pytest.raises(DlrmlabError, match="unknown variant"):
        variants.why_not_here("nope")


def test_add_and_prepare(temp_variant):
    v = temp_variant("_t_reg", fixed={"paper": {"prefetch": "register", "max_registers": 42}})
    assert "_t_reg" in variants.names()
    assert variants.get("_t_reg") is v
    p = variants.prepare("_t_reg", None, max_registers=40)
    # the variant's fixed knobs, overridden by the caller's, sorted by family
    assert p.params["seen"] == {"paper": {"prefetch": "register", "max_registers": 40}}
    assert p.params["max_registers"] == 40 and p.params["fixed"] == 1  # given params, then the variant's own


def test_table_is_well_formed():
    assert variants.VARIANTS, "empty variant table"
    for name, v in variants.VARIANTS.items():
        assert isinstance(v, Variant) and v.name == name, name
        assert name == name.strip() and name, name
        assert not any(c in name for c in ", \t\n"), f"{name!r}: the CLI splits variant lists on ','"
        assert v.description, name
        assert callable(v.prepare), name
        # every family (and every family a fixed knob belongs to) is one variants.KNOBS knows
        assert set(v.families) <= set(variants.KNOBS), (name, v.families)
        assert set(v.fixed) <= set(v.families), (name, v.fixed)
        for family, knobs in v.fixed.items():
            assert set(knobs) <= variants.KNOBS[family], (name, family, knobs)
        assert variants.knobs_for(name, {}) == {f: dict(v.fixed.get(f, {})) for f in v.families}


_EXPLICIT = r"""
import importlib, json, pkgutil, sys
import dlrmlab.variants as v
first = sorted(v.VARIANTS)
loaded = sorted(m for m in sys.modules if m.startswith("dlrmlab."))
import dlrmlab
for info in pkgutil.walk_packages(dlrmlab.__path__, "dlrmlab."):
    if info.name.endswith(".__main__"):
        continue  # python -m dlrmlab: importing it runs the command
    try:
        importlib.import_module(info.name)
    except Exception:
        pass  # optional dependencies (a peer's toolchain, torch): not what this test is about
print(json.dumps({"first": first, "after": sorted(v.VARIANTS), "loaded": loaded}))
"""


def test_table_is_explicit():
    """Importing dlrmlab.variants registers nothing elsewhere, and importing anything else adds no variant:
    the table is the literal in dlrmlab/variants/__init__.py."""
    out = subprocess.run([sys.executable, "-c", _EXPLICIT], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["first"] == got["after"] == sorted(variants.VARIANTS)
    # no measurement, CLI or registry module is pulled in (or written to) by the table
    assert not [m for m in got["loaded"] if m.startswith(("dlrmlab.bench", "dlrmlab.cli", "dlrmlab.reproduce"))]
    with pytest.raises(ModuleNotFoundError):
        __import__("dlrmlab.bench.registry")


def test_knobs_for_refuses_an_unknown_knob_naming_variant_and_knob():
    with pytest.raises(DlrmlabError, match=r"variant 'rpf' does not take 'unroll'; it takes: ") as e:
        variants.knobs_for("rpf", {"unroll": 4})
    assert all(k in str(e.value) for k in variants.KNOBS["paper"])
    with pytest.raises(DlrmlabError, match=r"variant 'fast' does not take 'prefetch'"):
        variants.knobs_for("fast", {"prefetch": "register"})
    with pytest.raises(DlrmlabError, match=r"variant 'torch' does not take 'block'; it takes: no parameters"):
        variants.knobs_for("torch", {"block": 3})
    # refused before anything is prepared (no case needed)
    with pytest.raises(DlrmlabError, match=r"variant 'l2p' does not take 'bogus'"):
        variants.prepare("l2p", None, bogus=1)


def test_knobs_for_sorts_by_family_and_overrides_fixed_knobs():
    assert variants.knobs_for("rpf", {"prefetch_distance": 4}) == {
        "paper": {"prefetch": "register", "prefetch_distance": 4}
    }
    assert variants.knobs_for("combined", {"hot_rows": 10, "max_registers": 32}) == {
        "paper": {"max_registers": 32, "prefetch": "register", "prefetch_distance": 2},
        "pin": {"hot_rows": 10},
    }
    assert variants.knobs_for("fast+l2p", {"unroll": 4}) == {"fast": {"unroll": 4}, "pin": {}}


@pytest.mark.skipif(not backend.SIMULATOR, reason="simulator-only refusal")
def test_gpu_only_refused_in_simulator(temp_variant):
    temp_variant("_t_gpu", gpu_only=True)
    assert "_t_gpu" in variants.names()
    assert "_t_gpu" not in variants.names(available_only=True)
    assert "needs a CUDA GPU" in variants.why_not_here("_t_gpu")
    with pytest.raises(DlrmlabError, match="needs a CUDA GPU"):
        variants.prepare("_t_gpu", None)


def test_unavailable_variant_refused_before_prepare(temp_variant):
    def boom(case, knobs):
        raise AssertionError("prepare must not run")

    temp_variant("_t_gone", prepare=boom, unavailable=lambda: "missing toolchain")
    assert variants.why_not_here("_t_gone") == "missing toolchain"
    assert "_t_gone" not in variants.names(available_only=True)
    with pytest.raises(DlrmlabError, match="missing toolchain"):
        variants.prepare("_t_gone", None)


def test_a_new_row_is_seen_everywhere(temp_variant, capsys):
    """Adding a variant is one row: the CLI's list, the report's colours and hatches, Nsight Compute's kernel
    filter and the L2 model all read it from the table."""
    from dlrmlab import cli, l2model
    from dlrmlab.bench import ncu
    from dlrmlab.report import style

    temp_variant("_toy+window", families=("fast", "window"), kernels="toy_kernel", kind="fast",
                 technique=variants.TECHNIQUES["rpf"], adds=variants.TECHNIQUES["window"], l2_policy="fast+window")
    assert cli.main(["bench", "--list"]) == 0
    assert "_toy+window" in capsys.readouterr().out
    assert style.color("_toy+window") == variants.TECHNIQUES["rpf"].color
    assert style.bar_style("_toy+window")["edgecolor"] == variants.TECHNIQUES["window"].color
    assert ncu.default_kernel_regex("_toy+window") == "toy_kernel"
    assert l2model.policy_for("_toy+window") is l2model.POLICIES["fast+window"]
    assert not variants.get("_toy+window").standalone  # a window around its launches: not for api/dlrm


def test_rows_name_known_policies_and_techniques():
    from dlrmlab import l2model

    for name, v in variants.VARIANTS.items():
        assert v.l2_policy is None or v.l2_policy in l2model.POLICIES, name
        assert v.technique in variants.TECHNIQUES.values() and v.adds in (None, *variants.TECHNIQUES.values()), name
        assert v.kind in ("paper", "fast", "torch", "cuembed"), name
