"""``dlrmlab bench``: runs, prints, appends under ``<out>/<gpu family>/``; bad names exit 2 listing the valid
ones; choices the kernels do not implement are refused by argparse."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import run_cli as run

from dlrmlab import backend, cli, device, variants
from dlrmlab.variants import Prepared, Variant


def _add(monkeypatch, name, prepare):
    monkeypatch.setitem(variants.VARIANTS, name, Variant(name, "test only", prepare))


@pytest.mark.torch
def test_bench_torch_tiny(capsys, tmp_path):
    out_dir = tmp_path / "res"
    argv = ["bench", "--variant", "torch", "--dataset", "random", "--preset", "tiny", "--out", str(out_dir),
            "--quiet", "--repeats", "2", "--warmup", "0"]  # fmt: skip
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    assert "torch" in out and "random" in out
    if backend.SIMULATOR:
        assert "simulator: timings not meaningful" in out
    target = out_dir / device.family()  # every command writes under <out>/<gpu family>/
    assert f"{target}/bench.csv" in out
    df = pd.read_csv(target / "bench.csv")
    assert list(df["variant"]) == ["torch"] and df["correct"].all()
    assert len(pd.read_csv(target / "bench_runs.csv")) == 2
    rc, out, err = run(capsys, *argv, "--json", "--repeat-runs", "2")
    assert rc == 0
    recs = json.loads(out)
    assert [r["repeat"] for r in recs] == [0, 1] and recs[0]["run_id"] == recs[1]["run_id"]
    assert len(pd.read_csv(target / "bench.csv")) == 3
    assert sorted(p.name for p in out_dir.iterdir()) == [device.family()]


def test_unknown_variant_exits_2_with_valid_names(capsys, tmp_path):
    rc, out, err = run(capsys, "bench", "--variant", "nope", "--dataset", "random", "--out", str(tmp_path / "r"))
    assert rc == 2
    assert "unknown variant 'nope'" in err and "valid:" in err
    assert all(n in err for n in variants.names())
    assert not (tmp_path / "r").exists()


def test_unknown_dataset_and_missing_args(capsys, tmp_path, host_variant):
    rc, _, err = run(capsys, "bench", "--variant", host_variant, "--dataset", "bogus", "--out", str(tmp_path))
    assert rc == 2 and "unknown dataset 'bogus'; valid:" in err
    rc, _, err = run(capsys, "bench", "--dataset", "random")
    assert rc == 2 and "--variant is required" in err
    rc, _, err = run(capsys, "bench", "--variant", host_variant, "--preset", "tiny", "--dataset", "random",
                     "--batches", "0", "--out", str(tmp_path), "--no-torch")  # fmt: skip
    assert rc == 2 and "--batches must be positive" in err


def test_unwritable_out_exits_2(capsys, tmp_path, host_variant):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    rc, _, err = run(capsys, "bench", "--variant", host_variant, "--dataset", "random", "--preset", "tiny",
                     "--out", str(blocker / "res"))  # fmt: skip
    assert rc == 2 and "cannot be created" in err


def _prepare_wrong(case, knobs):
    return Prepared(lambda i: None, lambda i: [r + 1 for r in case.reference(i)])


def test_incorrect_variant_exits_1(capsys, tmp_path, monkeypatch):
    _add(monkeypatch, "_cli_wrong", _prepare_wrong)
    argv = ["bench", "--variant", "_cli_wrong", "--dataset", "random", "--preset", "tiny", "--out", str(tmp_path),
            "--no-torch", "--quiet", "--repeats", "1", "--warmup", "0"]  # fmt: skip
    rc, out, _ = run(capsys, *argv)
    assert rc == 1 and "_cli_wrong on random: INCORRECT, not timed" in out


def test_list(capsys):
    rc, out, _ = run(capsys, "bench", "--list")
    assert rc == 0
    names = [line.split()[0] for line in out.splitlines() if line and not line.startswith("(")]
    assert names == variants.names()


@pytest.mark.parametrize("mode", ["max", "min"])
def test_mode_the_kernels_lack_is_refused_by_argparse(capsys, tmp_path, host_variant, mode):
    """--mode offers only what every variant implements (sum, mean): max fails up front, not in a kernel."""
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--variant", host_variant, "--dataset", "random", "--mode", mode,
                  "--out", str(tmp_path / "r")])  # fmt: skip
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --mode: invalid choice: '{mode}'" in err and "'sum', 'mean'" in err
    assert not (tmp_path / "r").exists()

