"""`cnnfpga bench`: every configuration measured side by side with OpenCV, as JSON or a table; the filler
caffemodel OpenCV reads is never left behind; bad options are one line and exit status 2."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cnnfpga import bench
from cnnfpga.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--seconds", "0.05", "--rounds", "1", "--patience", "0"]


def run(capsys, *args):
    try:
        status = main(["bench", *args])
    except SystemExit as exit:   # argparse
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def written(monkeypatch, tmp_path):
    """Python's temporary folder pointed at an empty folder; the caffemodels bench writes are listed."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    paths = []

    def write_weights(graph, path):
        paths.append(Path(path))
        write(graph, path)

    write = bench.write_weights
    monkeypatch.setattr(bench, "write_weights", write_weights)
    return folder, paths


@pytest.mark.slow
def test_lenet_on_both_backends_as_json(capsys, written):
    pytest.importorskip("cv2")
    status, out, err = run(capsys, "--net", "lenet.prototxt", "--batch", "1", "2", "--json", *QUICK)
    assert status == 0, err
    report = json.loads(out)
    rows = {(row["batch"], row["configuration"]): row for row in report["results"]}
    assert {row["backend"] for row in rows.values()} == {"reference", "opencl", "opencv"}
    assert {row["mode"] for row in rows.values() if row["backend"] == "opencl"} == {"forward", "stream"}
    assert len(rows) == 2 * 4 and all(row["images_per_s"] > 0 for row in rows.values())
    for (batch, _), row in rows.items():
        opencv = next(r for (b, _), r in rows.items() if b == batch and r["backend"] == "opencv")
        assert row["vs_opencv"] == pytest.approx(row["images_per_s"] / opencv["images_per_s"])
        if row["backend"] != "opencv" and row["mode"] == "forward":
            assert row["diff_vs_opencv"] < 1e-4   # the same weights and inputs on every side
    profiled = rows[(1, "opencl fast float, forward()")]
    assert set(profiled["stage_ms"]) == {"conv1", "pool1", "conv2", "pool2"}
    assert set(profiled["host_ms"]) == {"ip1", "ip2"} and profiled["build_s"] > 0
    folder, paths = written
    assert len(paths) == 1 and paths[0].is_relative_to(folder)   # OpenCV read the fillers from the temp folder
    assert list(folder.iterdir()) == []                           # and it is gone


def test_the_table_and_given_weights_write_nothing(capsys, written):
    pytest.importorskip("cv2")
    status, out, err = run(capsys, "--net", "lenet.prototxt", "--weights", "lenet.caffemodel",
                           "--backend", "reference", *QUICK)
    assert status == 0, err
    header = next(line for line in out.splitlines() if "configuration" in line)
    assert "images/s" in header and "x OpenCV" in header
    assert "1.00x" in next(line for line in out.splitlines() if line.strip().startswith("OpenCV dnn"))
    assert "filler" not in out and written[1] == []


def test_without_opencv_it_says_so_and_measures_the_rest(capsys, written, monkeypatch):
    monkeypatch.setattr(bench, "opencv_module", lambda: None)
    status, out, err = run(capsys, "--net", "lenet.prototxt", "--backend", "reference", "--json", *QUICK)
    report = json.loads(out)
    assert status == 0 and report["opencv"] is None and "OpenCV (cv2) is not installed" in err
    assert [row["backend"] for row in report["results"]] == ["reference"] and report["results"][0]["vs_opencv"] is None
    assert written[1] == []   # no caffemodel written for an OpenCV that is not there


@pytest.mark.parametrize("args, words", [
    (["--net", "nosuch.prototxt"], "nosuch.prototxt: no such file"),
    (["--net", "lenet.prototxt", "--batch", "0"], "expected a whole number >= 1, got 0"),
    (["--net", "lenet.prototxt", "--backend", "cuda"], "invalid choice: 'cuda'"),
    (["--net", "lenet.prototxt", "--variant", "turbo"], "invalid choice: 'turbo'"),
    (["--net", "lenet.prototxt", "--seconds", "-1"], "--seconds -1: expected seconds >= 0"),
    (["--net", "lenet.prototxt", "--backend", "reference", "--precision", "half"], "--precision: only for --backend opencl"),
])
def test_bad_options_get_one_line(capsys, written, args, words):
    status, out, err = run(capsys, *args)
    assert status == 2 and out == "" and err.count("\n") == 1 and words in err and "Traceback" not in err
    assert written[1] == []


def test_bench_load_help_writes_nothing(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_load.py"), "--help"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0 and done.stdout.startswith("usage:") and done.stderr == ""
    assert list(tmp_path.iterdir()) == []
