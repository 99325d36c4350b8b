"""The classify command and Net answer bad options with one line and exit status 2 (argparse's for malformed
options), never a traceback, and never quietly accept what cannot give a meaningful answer."""
from pathlib import Path

import pytest

import cnnfpga
from cnnfpga.classify import main
from cnnfpga.errors import CnnfpgaError

CAT = str(Path(__file__).resolve().parents[1] / "prototxt" / "chelsea.png")
NET = ["--net", "cifar10_quick.prototxt"]


def run(capsys, *args):
    try:
        status = main([CAT, *NET, *args])
    except SystemExit as exit:   # argparse
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def test_the_bundled_cat_is_classified(capsys):
    status, out, err = run(capsys, "--top", "2")
    assert status == 0 and "cat" in out and len([l for l in out.splitlines() if l.startswith("  ")]) == 2


@pytest.mark.parametrize("args, words", [
    (["--top", "0"], "expected a whole number >= 1"),
    (["--top", "-1"], "expected a whole number >= 1"),
    (["--raw-scale", "nan"], "expected a finite number"),
    (["--input-scale", "inf"], "expected a finite number"),
    (["--mean", "nan,nan,nan"], "finite numbers like"),
    (["--precision", "banana"], "precision applies to backend='opencl'"),
    (["--device", "pocl"], "device applies to backend='opencl'"),
    (["--design", "somewhere"], "design applies to backend='opencl'"),
    (["--backend", "opencl", "--design", "nowhere"], "nowhere/design.json: no design here"),
    (["--backend", "opencl", "--precision", "banana"], "unknown precision 'banana'"),
])
def test_bad_options_get_one_line(capsys, args, words):
    status, out, err = run(capsys, *args)
    assert status == 2 and words in err and "Traceback" not in err and out == ""


def test_a_partitioned_design_classifies_the_cat(capsys, tmp_path):
    """`cnnfpga design` then `cnnfpga classify --design`: the trained CIFAR-10 full net, in two programs
    (fixed16; it ranks the cat first, 0.40 against 0.31 for dog)."""
    from conftest import run_design
    done = run_design("--net", "cifar10_full.prototxt", "--board", "arria10_gx1150", "--partitions", "2",
                      "--out", str(tmp_path / "design"))
    assert done.returncode == 0, done.stderr
    status, out, err = run(capsys, "--net", "cifar10_full.prototxt", "--backend", "opencl", "--design",
                           str(tmp_path / "design"), "--top", "1")
    assert status == 0 and out.splitlines()[1].endswith("cat"), out
    status, out, err = run(capsys, "--backend", "opencl", "--design", str(tmp_path / "design"), "--precision",
                           "fixed8")
    assert status == 2 and "fixes the precision" in err and "Traceback" not in err


def test_labels_that_cannot_be_read_get_one_line(capsys, tmp_path):
    binary = tmp_path / "labels.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    for labels, words in [(tmp_path / "missing.txt", "no such labels file"), (tmp_path, "not a regular file"),
                          (binary, "not a text file")]:
        status, out, err = run(capsys, "--labels", str(labels))
        assert status == 2 and words in err and "Traceback" not in err, (labels, err)


def test_too_few_labels_are_refused(capsys, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("airplane\nautomobile\n")
    status, out, err = run(capsys, "--labels", str(labels), "--top", "10")
    assert status == 2 and "names 2 classes, the net scores 10" in err and out == ""


def test_reference_net_refuses_device_options():
    with pytest.raises(CnnfpgaError, match="precision, variant apply to backend='opencl'"):
        cnnfpga.Net("lenet.prototxt", precision="fixed16", variant="fast")
    with pytest.raises(CnnfpgaError, match="device applies to backend='opencl'"):
        cnnfpga.Net("lenet.prototxt", device=5)


def test_opencl_net_arguments_of_the_wrong_kind():
    with pytest.raises(CnnfpgaError, match="unknown variant 'turbo'; choose one of fpga, fast"):
        cnnfpga.Net("lenet.prototxt", backend="opencl", variant="turbo")
    with pytest.raises(CnnfpgaError, match="device= takes .* got int 5"):
        cnnfpga.Net("lenet.prototxt", backend="opencl", device=5)
    with pytest.raises(CnnfpgaError, match="names 'nosuch', which is not a blob of the net"):
        cnnfpga.Net("lenet.prototxt").forward(blobs=["nosuch"])
