"""Register counts without a GPU: the paper kernels compiled to PTX for sm_90 and assembled by ptxas (where
NVIDIA's toolkit wheels are installed, as the `gpu` extra does), and the occupancy claim that uses them in the
simulator, labelled as such, or says why not."""

from __future__ import annotations

import pandas as pd
import pytest

from dlrmlab import backend, cli, device, occupancy, rules
from dlrmlab.errors import DlrmlabError

#: ``ptxas -arch=sm_90 -v -maxrregcount 42`` on the paper kernel (name shortened).
PTXAS_OUT = """ptxas info    : 16 bytes gmem
ptxas info    : Compiling entry function '_ZN7dlrmlab7kernels5paper5build' for 'sm_90'
ptxas info    : Function properties for _ZN7dlrmlab7kernels5paper5build
    16 bytes stack frame, 16 bytes spill stores, 20 bytes spill loads
ptxas info    : Used 42 registers, used 0 barriers, 16 bytes cumulative stack size, 1024 bytes smem
ptxas info    : Compile time = 66.603 ms
"""
NO_PTXAS = occupancy.why_no_ptxas()


def test_parse_ptxas_report():
    assert occupancy.parse_ptxas(PTXAS_OUT) == {"registers": 42, "shared_bytes": 1024, "local_bytes": 16}
    with pytest.raises(DlrmlabError, match="no register count"):
        occupancy.parse_ptxas("ptxas fatal   : Unresolved extern function")


@pytest.mark.skipif(NO_PTXAS is not None, reason=f"cannot compile for sm_90 here: {NO_PTXAS}")
def test_paper_kernels_through_ptxas_without_a_gpu():
    t = occupancy.ptxas_resources(["baseline", "optmt"]).set_index("variant")
    assert set(t["arch"]) == {"sm_90"} and (t["threads_per_block"] == 256).all()
    assert 24 <= t.loc["baseline", "registers"] <= 96  # the H100 compiled 45 (DEVICE.md)
    assert t.loc["optmt", "registers"] <= 42  # the paper's cap, passed to ptxas as -maxrregcount


@pytest.mark.skipif(NO_PTXAS is not None, reason=f"cannot compile for sm_90 here: {NO_PTXAS}")
def test_the_rules_quantized_configurations_do_not_spill():
    """The register model of ``rules.quantized_registers`` checked against ptxas: what the rule picks for
    quantized rows fits its register cap without spilling (measured: one more row in flight than the model
    allows does spill for int8 and int4)."""
    shapes = [(128, f, rules.derive_knobs(128, f, 150, False, device.H100_LIMITS)) for f in ("int8", "int4", "fp8")]
    t = occupancy.ptxas_resources([], fused=shapes)
    assert (t["local_bytes"] == 0).all(), t.to_string()
    assert (t["registers"] <= t["max_registers"]).all()


def test_missing_toolkit_is_said(monkeypatch):
    monkeypatch.setattr(occupancy, "why_no_ptxas", lambda: "NVIDIA's toolkit wheels are not installed here (x)")
    with pytest.raises(DlrmlabError, match="toolkit wheels are not installed"):
        occupancy.ptxas_resources(["baseline"])


@pytest.mark.skipif(not backend.SIMULATOR, reason="the simulator's occupancy claim")
@pytest.mark.parametrize("ptxas", ["works", "missing"])
def test_occupancy_claim_in_the_simulator(tmp_path, monkeypatch, ptxas):
    def fake(variants, **kw):
        if ptxas == "missing":
            raise DlrmlabError("NVIDIA's toolkit wheels are not installed here (missing: NVRTC)")
        return pd.DataFrame([{"variant": v, "arch": "sm_90", "threads_per_block": 256, "shared_bytes": 0,
                              "registers": 45 if v == "baseline" else 42, "local_bytes": 0 if v == "baseline" else 16}
                             for v in variants])  # fmt: skip

    monkeypatch.setattr(occupancy, "ptxas_resources", fake)
    monkeypatch.setattr(occupancy, "why_no_ptxas", lambda: None if ptxas == "works" else "wheels missing (NVRTC)")
    assert cli.main(["reproduce", "--quiet", "--only", "occupancy", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "simulator" / "report.md").read_text()
    data = pd.read_csv(tmp_path / "simulator" / "occupancy.csv").set_index("variant")
    if ptxas == "works":
        assert data.loc["baseline", "registers"] == 45 and data.loc["baseline", "source"] == "ptxas sm_90, no GPU"
        assert data.loc["baseline", "theoretical_occupancy"] == pytest.approx(0.625)  # 45 regs, 256 threads
        assert "from ptxas for sm_90 on this CPU" in report and "No GPU here" in report
    else:
        assert data["registers"].isna().all()
        assert "wheels missing (NVRTC)" in report and "toolkit wheels are not installed" in report
