"""The real Intel-channel source on Intel's FPGA emulator (no channel emulation: every stage of a segment
runs at once and they block on each other's channels, as on an FPGA).

* trained LeNet and both CIFAR-10 nets classify the 1000 test images exactly as on PoCL, in float, half
  and fixed16;
* AlexNet and SqueezeNet 1.1 (a branching net; GoogLeNet's default design takes about 97 s to build on
  the emulator, SqueezeNet's 20-40 s) with filler weights match the golden models at batch 1;
* the source of every bundled net builds in every precision form;
* a partitioned design with a convolution reloading its weights runs as on PoCL, on the emulator alone
  and with its second program on PoCL;
* a pipeline that stalls is reported as a stall that names the stage, not a hang.

The emulator is slow where many stages block on shallow channels: a blocked kernel spins and starves
the working ones on a small machine.  Only the accuracy tests deepen the channels (see there).
"""
from concurrent.futures import ThreadPoolExecutor
import functools
from pathlib import Path
import subprocess
import sys

import numpy as np
import pyopencl as cl
import pytest

from cnnfpga import codegen, reference
from cnnfpga.design import default_design
from cnnfpga.design.model import fork_join_channels
from cnnfpga.fixed_reference import forward_fixed
from cnnfpga.graph import load_graph
from cnnfpga.placement import place
from cnnfpga.precision import calibrate, calibration_statistics, resolve_precision
from cnnfpga.runtime import DeviceNet, half_error_bound, select_device

from conftest import assert_bit_exact, deepen_channels, filler_graph, require_emulator, shared_path
from data_sets import cifar_files, cifar_rgb, mnist_test
from test_opencl_accuracy import cifar_inputs

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ["float", "half", "fixed16"]

pytestmark = pytest.mark.filterwarnings("ignore:Non-empty compiler output")   # the emulator's compiler chats


# ------------------------------------------------------------------ trained nets on the test images

BATCH = 100
TRAINED = {  # name: (prototxt, caffemodel, data set), under ../shared/models
    "lenet": ("lenet/lenet.prototxt", "lenet/lenet_iter_10000.caffemodel", "mnist"),
    "cifar10_quick": ("cifar10_quick/cifar10_quick.prototxt", "cifar10_quick_v1/cifar10_quick_iter_5000.caffemodel",
                      "cifar"),
    "cifar10_full": ("cifar10_full/cifar10_full.prototxt", "cifar10_full_v1/cifar10_full_iter_70000.caffemodel",
                     "cifar"),
}


@pytest.fixture(scope="module")
def mnist():
    """The first 1000 MNIST test digits and, for calibration, the next 200 (as test_opencl_accuracy)."""
    images, labels = mnist_test(shared_path("data", "mnist"), count=1200)
    digits = images.astype(np.float32)[:, None] * np.float32(0.00390625)
    return digits[:1000], labels[:1000], digits[1000:]


@pytest.fixture(scope="module")
def cifar():
    """The 1000 CIFAR-10 test JPEGs and, for calibration, the mirror images of every 10th."""
    paths, labels = cifar_files(shared_path("data", "cifar10_test_jpg"))
    images = cifar_rgb(paths)
    return cifar_inputs(images), labels, cifar_inputs(images[::10, :, ::-1])


def predictions(net, x: np.ndarray) -> np.ndarray:
    return np.concatenate([net.forward({"data": x[start:start + BATCH]})["prob"].argmax(axis=1)
                           for start in range(0, len(x), BATCH)])


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(TRAINED))
def test_trained_net_classifies_the_test_images_as_on_pocl(name, precision, request):
    """The same plan on PoCL (emulated channels) and on the emulator (real channels) gives the same
    prediction for every image, so the same accuracy, and counts the same saturations.

    The design's channel FIFOs are made a whole batch deep here, for the emulator's sake: with the
    design's depths (8 to 104 words) its spinning blocked kernels run CIFAR-10 quick at about 115 ms
    per image and LeNet at 470 ms, against 15-25 ms and 3 ms so.  Depths change when a stage waits,
    never what it computes; AlexNet, SqueezeNet and the stall test below keep the design's depths.
    """
    device = require_emulator()
    prototxt, caffemodel, data = TRAINED[name]
    x, labels, calibration = request.getfixturevalue(data)
    graph = load_graph(str(shared_path("models", prototxt)), str(shared_path("models", caffemodel)),
                       input_shapes={"data": (BATCH,) + x.shape[1:]})
    stats = calibration_statistics(graph, calibration)
    design = default_design(place(graph, precision, stats))
    deepen_channels(design, BATCH)
    emulator = DeviceNet(graph, design=design, device=device)
    pocl = DeviceNet(graph, precision=precision, calibration=stats)   # the same plan; depths are moot there
    emulated = predictions(emulator, x)
    np.testing.assert_array_equal(emulated, predictions(pocl, x))
    assert np.mean(emulated == labels) > 0.5   # a trained net (chance is 0.1), not filler weights
    assert emulator.saturation() == pocl.saturation()


# ------------------------------------------------------- filler weights against the golden models

FILLER = {  # name: (prototxt under ../shared/models, every conv at parallelism (1, 1, 1))
    "alexnet": ("alexnet/deploy.prototxt", False),
    "squeezenet": ("squeezenet_v1.1/deploy.prototxt", True),
}


def least_parallelism(graph) -> dict:
    return {layer.name: (1, 1, 1) for layer in graph.layers if layer.type == "Convolution"}


@functools.cache
def filler_net(name: str) -> tuple:
    """(graph at batch 1 with filler weights, an input, its calibration statistics)."""
    graph = filler_graph(shared_path("models", FILLER[name][0]))
    graph = graph.reshape({"data": (1,) + graph.inputs["data"][1:]})
    x = {"data": np.random.default_rng(0).uniform(-1, 1, graph.inputs["data"]).astype(np.float32)}
    return graph, x, calibrate(graph, x)


def relative_error(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(FILLER))
def test_filler_net_matches_the_golden_model(name, precision):
    """Every blob a device segment writes, and the outputs: float within float rounding, half within
    its documented bound, fixed16 bit-exact with the fixed-point golden model and saturating as often.

    AlexNet runs its default design, the wide unrolled datapaths, at its channel depths.  SqueezeNet,
    here for its forked streams, runs every conv at (1, 1, 1): its 26 convolutions at the default
    parallelism take the emulator's compiler 20-43 s per build, at (1, 1, 1) 2-3 s.  Its device layers
    are one segment of 36 stages, all running at once; the FIFOs on the fire modules' loops keep the
    depths the model sized (a fork whose short branch fills up stops, and the join waits forever), the
    others are made an image deep: at their design depths most of the 36 kernels spin on full or empty
    channels and starve the working ones (no stage finished within 10 minutes; so deepened, 6-9 s).
    """
    device = require_emulator()
    graph, x, stats = filler_net(name)
    parallelism = least_parallelism(graph) if FILLER[name][1] else None
    calibration = stats if precision == "fixed16" else None
    design = None
    if FILLER[name][1]:
        design = default_design(place(graph, precision, calibration_statistics(graph, calibration)), parallelism)
        loops = {channel for segment in design.plan.segments for channel in fork_join_channels(segment)}
        sized = {channel: design.channel_depths[channel] for channel in loops}
        deepen_channels(design, 1)
        design.channel_depths.update(sized)
        net = DeviceNet(graph, design=design, device=device)
    else:
        net = DeviceNet(graph, precision=precision, calibration=calibration, device=device)
    got = net.forward(x)
    blobs = net.plan.written_blobs()
    if precision == "fixed16":
        golden = forward_fixed(graph, x, resolve_precision(graph, precision, stats))
        assert_bit_exact(net, got, golden)
        for blob in graph.outputs:   # host layers after the device: BLAS order only
            np.testing.assert_allclose(got[blob], golden.blobs[blob], rtol=1e-4, atol=1e-6)
        return
    want = reference.forward(graph, x)
    error = max(relative_error(got[blob], want[blob]) for blob in blobs + list(graph.outputs))
    bound = 1e-4 if precision == "float" else half_error_bound(net.plan)
    assert error < bound, f"{name} {precision}: relative error {error}, bound {bound}"


# --------------------------------------------------------------------------------- every net builds

FORMS = ["float", "half", "fixed16", "fixed8", "mixed"]   # mixed: the first conv float, the rest fixed16


def shapes_and_weights(prototxt: Path):
    """The net at batch 1 with constant weights in every layer but the inner products (which the host
    runs).  Fixed formats are sized from the weights' largest magnitude and the statistics; no more is
    needed to generate the source, and the bundled VGG16 (its pooling strides are 1) would need 400 GB
    of filler weights for fc6."""
    graph = load_graph(str(prototxt), fill=False)
    graph = graph.reshape({name: (1,) + shape[1:] for name, shape in graph.inputs.items()})
    for layer in graph.layers:
        if layer.type != "InnerProduct":
            layer.blobs = [np.full(shape, 0.1, np.float32) for shape in layer.kind.blob_shapes(layer.spec, layer.in_shapes)]
    return graph


@pytest.mark.slow
@pytest.mark.parametrize("prototxt", sorted((ROOT / "prototxt").glob("*.prototxt")), ids=lambda path: path.stem)
def test_every_bundled_net_builds_in_every_precision(prototxt):
    """One build of the real channel source per precision form.

    Every conv stage gets the least parallelism, (1, 1, 1): the emulator's compiler is slow on fully
    unrolled loops (GoogLeNet's default design takes about 97 s to build, this one 6 s), and the
    templates, formats and channels the source is made of are the same at any parallelism.  Two builds
    run at once (pyopencl releases the GIL while one compiles): all 45 take 76 s instead of 102 s.
    """
    context = cl.Context([select_device(require_emulator())])
    graph = shapes_and_weights(prototxt)
    stats = {blob: 4.0 for blob in graph.shapes}   # a plausible max |x| for every blob
    first_conv = next(layer.name for layer in graph.layers if layer.type == "Convolution")
    settings = {"float": "float", "half": "half", "fixed16": "fixed16", "fixed8": "fixed8",
                "mixed": {"*": "fixed16", first_conv: "float"}}

    def build(form):
        plan = place(graph, settings[form], stats)
        design = default_design(plan, least_parallelism(graph))
        try:
            cl.Program(context, codegen.generate(plan, design).source).build()
        except cl.Error as error:
            return f"{form}: {error}"
        return None

    with ThreadPoolExecutor(2) as pool:
        failures = [failure for failure in pool.map(build, FORMS) if failure]
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------------- stalls

# Stage 1 (pool1) reads zeros instead of its input channel: conv1 fills the channel and waits forever.
STALL_SCRIPT = """
import sys, warnings
import numpy as np
from cnnfpga.errors import DeviceError
from cnnfpga.graph import load_graph
from cnnfpga.runtime import DeviceNet
warnings.simplefilter("ignore")
graph = load_graph(sys.argv[1], input_shapes={"data": (1, 1, 28, 28)})
net = DeviceNet(graph, device=sys.argv[2], stall_seconds=2,
                inject={1: "#undef READ_IN\\n#define READ_IN() ((IN_WORD){{0}})"})
try:
    net.forward({"data": np.zeros((1, 1, 28, 28), np.float32)})
    print("forward() returned")
except DeviceError as error:
    print(error)
"""


@pytest.mark.slow
def test_a_stalled_pipeline_is_reported_naming_the_stage():
    """In a child process: the stalled kernel keeps spinning after the error and would slow every
    later test here."""
    device = require_emulator()
    prototxt = shared_path("models", "lenet", "lenet.prototxt")
    child = subprocess.run([sys.executable, "-c", STALL_SCRIPT, str(prototxt), device], capture_output=True,
                           text=True, cwd=ROOT, timeout=120)
    assert child.returncode == 0, child.stderr
    message = child.stdout
    assert "stalled" in message and "stage 0 'conv1'" in message, message
    assert "pool1" not in message, message   # the stages after it ran to the end


# ------------------------------------------------------------------ partitions, reloading, devices

def test_a_partitioned_reloading_design_runs_on_the_emulator_and_beside_pocl():
    """Two programs (the real channel source, stages at once) with a convolution in two passes: on the
    emulator alone (the programs in turn) and with the second program on PoCL (two devices), bit-exact
    with the same design on PoCL."""
    from cnnfpga.design.boards import load_board
    from cnnfpga.design.partitions import design_partitions
    from cnnfpga.placement import reload_filters
    emulator = require_emulator()
    graph = filler_graph(ROOT / "prototxt" / "cifar10_quick.prototxt")
    graph = graph.reshape({"data": (1, 3, 32, 32)})
    plan = place(graph, "fixed16")
    conv2 = next(stage.index for stage in plan.stages if stage.name == "conv2")
    design = design_partitions(reload_filters(plan, conv2, 2), load_board("arria10_gx1150"), 2)
    x = {"data": np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)}
    pocl = DeviceNet(graph, design=design)
    want = pocl.forward(x)
    for device in (emulator, [emulator, pocl.device.platform.name]):
        net = DeviceNet(graph, design=design, device=device)
        assert net.places[0].fpga and net.places[-1].fpga == (device == emulator)
        got = net.forward(x)
        assert all(np.array_equal(got[name], want[name]) for name in want)
        assert net.saturation() == pocl.saturation()
