"""Shared test helpers. Real models and data live read-only in ../shared beside the repository."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder; skips the test when it is missing (fails it under CI)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"shared data not found: {path}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def filler_graph(path, *args, **kwargs):
    """load_graph without weights, its "outputs are meaningless" warning silenced: filler weights are the
    point of these tests."""
    import warnings

    from cnnfpga.graph import load_graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_graph(str(path), *args, **kwargs)


@pytest.fixture
def shared() -> Path:
    return shared_path()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests that take seconds (still run in CI)")


@pytest.fixture(scope="session")
def filler_caffemodel(tmp_path_factory):
    """write(prototxt_path) -> (graph, caffemodel path): the graph (the prototxt's own input shapes) with
    seeded filler weights, written once per session with our writer so that OpenCV can build the same net."""
    import warnings

    from cnnfpga.caffe.writer import write_caffemodel
    from cnnfpga.graph import load_graph

    folder = tmp_path_factory.mktemp("filler_weights")
    written = {}

    def write(prototxt):
        key = str(prototxt)
        if key not in written:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "no weights given": intended here
                graph = load_graph(str(prototxt))
            path = folder / f"{len(written)}_{Path(prototxt).parent.name}.caffemodel"
            write_caffemodel(path, graph.name, [(l.name, l.type, l.blobs) for l in graph.layers if l.blobs])
            written[key] = (graph, path)
        return written[key]

    return write


def vgg16_with_pool_stride(text: str, stride: int) -> str:
    """The shared VGG16 prototxt's pooling layers (2x2, stride 1 in that copy) with another stride."""
    return text.replace("kernel_size: 2\n    stride: 1\n", f"kernel_size: 2\n    stride: {stride}\n")


@pytest.fixture(scope="session")
def vgg16_published() -> Path:
    """VGG16 as the VGG team published it (2x2 pooling with stride 2, 7x7x512 into fc6): the bundled copy.

    The shared copy (from closerbibi/cnn4bvroi) pools with stride 1, which makes fc6 take 512*219*219
    inputs (400 GB of weights); the tests refuse that net on purpose (test_graph.py).
    """
    return Path(__file__).resolve().parents[1] / "prototxt" / "vgg16.prototxt"


EMULATOR = "FPGA Emulation"   # device= selector of Intel's FPGA emulator


def require_emulator() -> str:
    """The device selector of Intel's FPGA emulator; skips the test when it is not visible (fails it
    under CI, which installs it: .ci/run)."""
    from cnnfpga.emulator import emulator_visible
    if not emulator_visible():
        reason = ("the Intel FPGA emulator is not visible: `python3 -m cnnfpga.emulator install`, "
                  "then the export line it prints")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return EMULATOR


def deepen_channels(design, images: int) -> None:
    """Make every channel FIFO of `design` hold `images` whole images, so that no stage ever waits to
    write.  For the emulator's sake only: there a blocked kernel spins and starves the working ones (a
    balanced AlexNet took 540 s for one image at the design's depths, under 20 s an image deep).
    Depth changes when a stage waits, never what it computes."""
    from cnnfpga.design import channels
    from cnnfpga.design.stage import padded
    for segment in design.plan.segments:
        for name, producer, _, _ in channels(segment):
            _, c, h, w = producer.out_shape
            width = design.of(producer).width_out
            design.channel_depths[name] = images * h * w * padded(c, width) // width


def assert_bit_exact(net, got: dict, golden) -> None:
    """A fixed-point DeviceNet's outputs against the fixed-point golden model: every blob a device
    segment wrote bit-exact, and every stage's saturation count equal -- except in segments fed by a
    host layer, whose float BLAS sums in another order than the golden model (Plan.host_fed_segments):
    their blobs may differ by one step of their format, and their saturation counts are not compared."""
    import numpy as np
    plan = net.plan
    host_fed = plan.host_fed_segments()
    fed = {plan.blob_names[key]: s.producer(key) for s in host_fed for key in s.sinks}
    for blob in plan.written_blobs():
        if blob in fed:
            step = 2.0 ** -fed[blob].precision.outputs.frac_bits
            np.testing.assert_allclose(got[blob], golden.blobs[blob], rtol=0, atol=step, err_msg=blob)
        else:
            np.testing.assert_array_equal(got[blob], golden.blobs[blob], err_msg=blob)
    counts = net.saturation()
    checked = [stage.name for segment in plan.segments if segment not in host_fed for stage in segment.stages]
    assert {name: counts[name] for name in checked} == {name: golden.saturation[name] for name in checked}


def assert_emulator_runs_as_pocl(graph, design, x: dict) -> None:
    """`design` on Intel's FPGA emulator -- its real channel source, every stage of a segment at once,
    blocking on its channels -- gives PoCL's outputs bit for bit."""
    import numpy as np

    from cnnfpga.runtime import DeviceNet
    device = require_emulator()
    want = DeviceNet(graph, design=design).forward(x)
    net = DeviceNet(graph, design=design, device=device)
    assert net.places[0].fpga
    got = net.forward(x)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def assert_stored_and_loaded_as_it_was(design, graph, net_path, folder) -> None:
    """`design`, saved in `folder` for the net at `net_path` and loaded again: the same formats and the
    same kernel sources."""
    from cnnfpga.codegen import program_sources
    from cnnfpga.design.store import load_design, save_design
    save_design(design, folder, net_path)
    loaded = load_design(folder, graph)
    assert loaded.plan.precisions == design.plan.precisions
    assert program_sources(loaded) == program_sources(design)


def run_design(*args):
    """`python -m cnnfpga.design ARGS`, output captured."""
    return subprocess.run([sys.executable, "-m", "cnnfpga.design", *args], capture_output=True, text=True,
                          timeout=600)
