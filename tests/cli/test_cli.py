"""The ``dlrmlab`` command, in-process (and once as a real process)."""

from __future__ import annotations

import json

import pytest
from helpers import parsers, run_dlrmlab, simulator_only
from helpers import run_cli as run

from dlrmlab import backend, cli
from dlrmlab.datasets import dataset_names


@simulator_only
def test_info_announces_simulator_mode(capsys):
    rc, out, err = run(capsys, "info")
    assert rc == 0
    assert "simulator mode" in out
    assert "numba" in out
    assert err == ""


@simulator_only
def test_info_json(capsys):
    rc, out, _ = run(capsys, "info", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["mode"] == "simulator"
    assert "simulator mode" in d["message"]
    assert "numba" in d["versions"]


def test_describe_json(capsys):
    rc, out, err = run(capsys, "workload", "describe", "--dataset", "random", "--preset", "tiny", "--json")
    assert rc == 0 and err == ""
    d = json.loads(out)
    assert {"ids", "distinct", "top_coverage"} <= set(d)
    assert set(d["top_coverage"]) == {"1000", "5000", "60000"}
    assert d["ids"] == 3 * 8 * 5
    assert 0 < d["distinct"] <= d["ids"]
    assert d["top_coverage"]["60000"] == 1.0
    assert (d["preset"], d["dataset"], d["seed"]) == ("tiny", "random", 0)


def test_describe_overrides_and_ids(capsys):
    argv = (
        "workload describe --dataset zipf:1.1 --preset tiny --rows 50 --tables 2 --batch 4 --dim 16"
        " --pooling uniform:1-3 --seed 3 --ids 1000 --json"
    ).split()
    rc, out, _ = run(capsys, *argv)
    assert rc == 0
    d = json.loads(out)
    assert (d["tables"], d["rows"], d["batch"], d["dim"], d["pooling"]) == (2, 50, 4, 16, "uniform:1-3")
    assert d["ids"] == 1000 and d["max_id"] < 50 and d["seed"] == 3
    rc2, out2, _ = run(capsys, *argv)
    assert json.loads(out2) == d  # deterministic


def test_describe_human_readable(capsys):
    rc, out, _ = run(capsys, "workload", "describe", "--dataset", "low", "--preset", "tiny")
    assert rc == 0
    assert "top 60000 rows take" in out
    assert "distinct" in out


TRACES = {"bad.txt": "1\n2\nabc\n", "neg.txt": "4\n-3\n", "big.txt": "5000\n6000\n"}

BAD_INPUTS = [
    pytest.param(["--dataset", "nope"], ["unknown dataset 'nope'", *dataset_names()], id="unknown-dataset"),
    pytest.param(["--dataset", "random", "--rows", "0"], ["--rows must be positive"], id="rows-0"),
    pytest.param(["--dataset", "random", "--batch", "-1"], ["--batch must be positive"], id="batch-neg"),
    pytest.param(["--dataset", "random", "--tables", "0"], ["--tables must be positive"], id="tables-0"),
    pytest.param(["--dataset", "random", "--dim", "-8"], ["--dim must be positive"], id="dim-neg"),
    pytest.param(["--dataset", "random", "--pooling", "0"], ["pooling"], id="pooling-0"),
    pytest.param(["--dataset", "random", "--pooling", "uniform:5-2"], ["pooling"], id="pooling-uniform"),
    pytest.param(["--dataset", "trace:{tmp}/bad.txt"], ["{tmp}/bad.txt:3:", "abc"], id="malformed-trace"),
    pytest.param(["--dataset", "trace:{tmp}/neg.txt"], ["{tmp}/neg.txt:2:", "negative"], id="negative-id"),
    pytest.param(["--dataset", "trace:{tmp}/missing.txt"], ["not found"], id="missing-trace"),
    pytest.param(["--dataset", "trace:{tmp}/big.txt"], ["no id below rows=1000"], id="no-id-below-rows"),
    pytest.param(["--dataset", "zipf:abc"], ["zipf:abc"], id="zipf-abc"),
    pytest.param(["--dataset", "zipf:-1"], ["zipf alpha"], id="zipf-neg"),
    pytest.param(["--dataset", "random", "--preset", "huge"], ["unknown preset 'huge'"], id="preset"),
    pytest.param(["--dataset", "random", "--ids", "0"], ["--ids must be positive"], id="ids-0"),
]


@pytest.mark.parametrize(("args", "needles"), BAD_INPUTS)
def test_bad_input_is_one_line_error(capsys, tmp_path, args, needles):
    for name, text in TRACES.items():
        (tmp_path / name).write_text(text)
    rc, out, err = run(capsys, "workload", "describe", "--preset", "tiny", *[a.format(tmp=tmp_path) for a in args])
    assert rc == 2
    assert out == ""
    assert err.startswith("dlrmlab: error: ")
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle.format(tmp=tmp_path) in err


def test_negative_seed_is_one_line_error(capsys):
    rc, _, err = run(capsys, "workload", "describe", "--dataset", "random", "--preset", "tiny", "--seed", "-1")
    assert rc == 2 and err.startswith("dlrmlab: error: ")


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["workload", "describe", "--dataset", "random", "--rows", "abc"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_module_entry_point_info():
    p = run_dlrmlab("info")
    assert p.returncode == 0, p.stderr
    assert ("simulator mode" if backend.SIMULATOR else "compute_capability") in p.stdout
    assert "Traceback" not in p.stderr


def test_module_entry_point_exit_code():
    p = run_dlrmlab("workload", "describe", "--dataset", "nope", "--preset", "tiny")
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith("dlrmlab: error: unknown dataset") and p.stderr.count("\n") == 1


def test_one_preset_rule():
    """Every command that takes --preset defaults to auto: paper on a GPU, tiny in the simulator."""
    with_preset = {}
    for name, sub in parsers(cli.build_parser(), ""):
        for action in sub._actions:
            if "--preset" in action.option_strings:
                with_preset[name.strip()] = action.default
    assert {"workload describe", "bench", "tune", "profile"} <= set(with_preset)
    assert set(with_preset.values()) == {"auto"}, with_preset
    args = cli.build_parser().parse_args(["workload", "describe", "--dataset", "random"])
    assert cli._preset(args) == backend.default_preset() == ("tiny" if backend.SIMULATOR else "paper")


def test_describe_default_preset_is_paper_on_any_machine(capsys):
    """Hotness is a CPU analysis: the paper's shape even in the simulator, and the output says what it is."""
    rc, out, _ = run(capsys, "workload", "describe", "--dataset", "random", "--json")
    d = json.loads(out)
    assert rc == 0 and d["preset"] == "paper" and d["ids"] == 12 * 2048 * 150
    assert d["describes"].startswith("one batch (3,686,400 ids) of random for the paper preset's tables")
