"""`pip install .` ships everything: kernels, bundled nets, their preprocessing table and weights.

The package is installed into a temporary folder (no dependencies: they are already here) and the
command line is run from an unrelated working directory, so nothing can come from the source tree.
"""
import os
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_package_classifies_from_another_directory(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--disable-pip-version-check", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    env = dict(os.environ, PYTHONPATH=str(target))
    result = subprocess.run([sys.executable, "-m", "cnnfpga.classify", str(ROOT / "prototxt" / "chelsea.png"),
                             "--net", "cifar10_full.prototxt", "--backend", "opencl", "--top", "1"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert str(target) in subprocess.run([sys.executable, "-c", "import cnnfpga; print(cnnfpga.__file__)"],
                                         capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert "cat" in result.stdout  # the bundled trained CIFAR-10 net sees the bundled cat photo as a cat
    installed = target / "cnnfpga"
    for name in ["kernels/channels.h", "kernels/window.cl", "prototxt/nets.json", "prototxt/lenet.caffemodel",
                 "host/inner_product.py", "caffe/caffe.proto"]:
        assert (installed / name).is_file(), name
    # the console script: `cnnfpga COMMAND`
    script = target / "bin" / "cnnfpga"
    assert script.is_file()
    info = subprocess.run([str(script), "info", "--net", "lenet.prototxt"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert info.returncode == 0 and "conv1" in info.stdout and "2.3 M MACs" in info.stdout, info.stderr
