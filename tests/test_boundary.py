"""Bad input at the API boundary, on both backends: refused before any numpy or OpenCL call with an error
that names the blob or layer, what was expected and what was given (the reliability issue's examples)."""
import os
from pathlib import Path
import warnings

import numpy as np
import pytest

import cnnfpga
from cnnfpga import InputError, NetDefinitionError, PrecisionError, ResourceError, WeightsError

LENET = ("lenet.prototxt", "lenet.caffemodel")
DIGIT = np.ones((1, 1, 28, 28), np.float32) * 0.5


@pytest.fixture(params=["reference", "opencl"])
def net(request):
    return cnnfpga.Net(*LENET, backend=request.param)


@pytest.mark.parametrize("data, error, words", [
    (np.zeros((1, 3, 28, 28)), WeightsError, "layer 'conv1' needs weights [20, 3, 5, 5]"),
    (np.zeros((1, 1, 20, 20)), WeightsError, "layer 'ip1' needs weights [500, 200]"),
    (np.zeros((1, 28, 28)), InputError, "3-D data [1, 28, 28], the net's input is 4-D"),
    (np.zeros((1, 1, 1, 28, 28)), InputError, "5-D data"),
    (np.zeros((0, 1, 28, 28)), InputError, "holds no values"),
    ("not numbers", InputError, "expected numbers"),
    ([[1, 2], [3]], InputError, "not an array of numbers"),
])
def test_forward_refuses_data_that_cannot_be_a_batch(net, data, error, words):
    with pytest.raises(error) as raised:
        net.forward(data=data)
    assert words in str(raised.value) and ("'data'" in str(raised.value) or "layer" in str(raised.value))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("backend, precision", [("reference", "float"), ("opencl", "float"), ("opencl", "fixed16"),
                                                ("opencl", "half")])
def test_a_non_finite_input_gets_the_same_answer_on_every_path(backend, precision, value):
    """The documented rule: inputs must be finite; every backend and precision refuses the same input."""
    options = {} if backend == "reference" else {"precision": precision, "calibration": DIGIT}
    net = cnnfpga.Net(*LENET, backend=backend, **options)
    data = DIGIT.copy()
    data[0, 0, 3, 4] = value
    with pytest.raises(InputError, match="input 'data': 1 NaN or infinite value"):
        net.forward(data=data)


@pytest.mark.parametrize("shape, error, words", [
    ((0, 1, 28, 28), InputError, "at least 1"),
    ((-1, 1, 28, 28), InputError, "at least 1"),
    ((1.5, 1, 28, 28), InputError, "whole number"),
    ((2**40, 1, 28, 28), ResourceError, "does not fit"),
    ((2**62, 2**62, 28, 28), ResourceError, "does not fit"),   # int64 would wrap this product to zero
])
def test_reshape_refuses_shapes_that_cannot_exist(shape, error, words):
    net = cnnfpga.Net(*LENET)
    with pytest.raises(error, match=words):
        net.blobs["data"].reshape(*shape)


def test_replacing_a_param_array_takes_effect_and_a_wrong_shape_is_refused(net):
    before = net.forward(data=DIGIT)["prob"].copy()
    net.params["conv1"][0].data = np.zeros((20, 1, 5, 5), np.float32)   # pycaffe lets you assign, too
    after = net.forward(data=DIGIT)["prob"]
    assert not np.allclose(before, after, atol=1e-3)
    net.params["ip2"][0].data = np.zeros((3, 3))
    with pytest.raises(WeightsError, match=r"net.params\['ip2'\]\[0\].data has shape \[3, 3\]; the layer needs"):
        net.forward(data=DIGIT)


@pytest.mark.parametrize("calibration, error, words", [
    (np.zeros((4, 1, 28, 28)), PrecisionError, "all zeros"),
    (np.full((4, 1, 28, 28), np.nan), InputError, "NaN or infinite"),
    (np.ones((1, 28, 28)), InputError, "3-D data"),
    ({"nosuch": np.ones((1, 1, 28, 28))}, PrecisionError, "'nosuch', which is not an input"),
])
def test_calibration_that_cannot_choose_formats_is_refused(calibration, error, words):
    with pytest.raises(error, match=words):
        cnnfpga.Net(*LENET, backend="opencl", precision="fixed8", calibration=calibration)


def test_a_transformer_refuses_an_image_with_the_wrong_channel_count():
    transformer = cnnfpga.io.Transformer({"data": (1, 3, 32, 32)})
    transformer.set_transpose("data", (2, 0, 1))
    for channels in (1, 4, 5):
        with pytest.raises(InputError, match=f"the image has {channels} channels.*'data' takes 3"):
            transformer.preprocess("data", np.zeros((32, 32, channels), np.float32))


def prototxt(tmp_path, shape: str, layer: str) -> str:
    path = tmp_path / "net.prototxt"
    path.write_text(f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {shape} }} }} }}\n'
                    f'layer {{ name: "l" {layer} bottom: "data" top: "out" }}\n')
    return str(path)


@pytest.mark.parametrize("shape", ["dim: 1 dim: 8", "dim: 1 dim: 3 dim: 8", "dim: 1 dim: 1 dim: 3 dim: 8 dim: 8"])
@pytest.mark.parametrize("layer", ['type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 }',
                                   'type: "Pooling" pooling_param { kernel_size: 1 }', 'type: "LRN"'])
def test_window_layers_on_a_blob_that_is_not_4d_are_refused_with_file_and_line(tmp_path, shape, layer):
    with pytest.raises(NetDefinitionError, match=r"net.prototxt:2 \(layer 'l'\): \w+ needs a 4-D bottom"):
        cnnfpga.Net(prototxt(tmp_path, shape, layer))


@pytest.mark.parametrize("layer, words", [
    ('type: "BatchNorm" batch_norm_param { eps: -10 }', "eps must be a positive number, got -10"),
    ('type: "BatchNorm" batch_norm_param { eps: 0 }', "eps must be a positive number, got 0"),
    ('type: "ReLU" relu_param { negative_slope: nan }', "negative_slope must be a finite number"),
    ('type: "LRN" lrn_param { alpha: inf }', "alpha must be a finite number"),
])
def test_parameters_that_cannot_give_a_number_are_refused(tmp_path, layer, words):
    with pytest.raises(NetDefinitionError, match=r"net.prototxt:2 \(layer 'l'\): .*" + words):
        cnnfpga.Net(prototxt(tmp_path, "dim: 1 dim: 3 dim: 8 dim: 8", layer))


def test_saturation_is_a_warning_once_with_the_stages_that_saturated():
    """Fixed8 with the default half-fraction formats (+-8) on inputs up to 100: conv1 saturates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = cnnfpga.Net(*LENET, backend="opencl", precision="fixed8")
    with pytest.warns(UserWarning, match=r"values saturated .* in conv1 [\d,]+") as caught:
        net.forward(data=DIGIT * 200)
    assert len([w for w in caught if "saturated" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a second saturating forward: no second warning
        net.forward(data=DIGIT * 200)
    assert net.executor.saturation()["conv1"] > 0


@pytest.mark.parametrize("option", ["image", "--net", "--weights", "--mean", "--labels", "--precision", "--board"])
def test_a_named_pipe_is_refused_not_read_forever(tmp_path, capsys, option):
    from cnnfpga.cli import main
    fifo = tmp_path / ("pipe.npy" if option == "--mean" else "pipe.json")
    os.mkfifo(fifo)
    cat = str(Path(__file__).resolve().parents[1] / "prototxt" / "chelsea.png")
    args = {"image": ["classify", str(fifo), "--net", "cifar10_quick.prototxt"],
            "--precision": ["classify", cat, "--net", "cifar10_quick.prototxt", "--backend", "opencl",
                            "--precision", str(fifo)],
            "--board": ["design", "--net", "lenet.prototxt", "--board", str(fifo), "--out", str(tmp_path / "d")]}
    argv = args.get(option, ["classify", cat, "--net", "cifar10_quick.prototxt", option, str(fifo)])
    if option == "--net":
        argv = ["classify", cat, "--net", str(fifo)]
    assert main(argv) != 0
    assert f"{fifo}: not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("options, words", [
    ({"stall_seconds": "x"}, "stall_seconds= takes a positive number"),
    ({"stall_seconds": 0}, "stall_seconds= takes a positive number"),
    ({"prune_threshold": float("nan")}, "prune_threshold= takes a number >= 0"),
    ({"host_threads": 0}, "host_threads= takes a whole number >= 1"),
    ({"calibration": 5}, "calibration= takes input batches"),
    ({"calibration": {"data": "x"}}, "calibration value of 'data' must be a finite number"),
    ({"parallelism": {"conv1": (0, 1, 1)}}, "ci=0 must divide"),
    ({"seed": -1}, "seed= takes a whole number"),
])
def test_opencl_options_of_the_wrong_kind_are_refused_before_any_build(options, words):
    with pytest.raises(cnnfpga.CnnfpgaError, match=words):
        cnnfpga.Net(*LENET, backend="opencl", **options).forward(data=DIGIT)


def test_a_net_path_that_is_not_a_path_is_refused():
    with pytest.raises(cnnfpga.ModelFileError, match="expected a file path .* got int 5"):
        cnnfpga.Net("lenet.prototxt", 5)


def test_a_net_with_two_inputs_needs_both(tmp_path):
    path = tmp_path / "two.prototxt"
    path.write_text("".join(f'layer {{ name: "{n}" type: "Input" top: "{n}" input_param {{ shape {{ dim: 1 dim: 3 '
                            f'dim: 8 dim: 8 }} }} }}\n' for n in "ab") +
                    'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }\n')
    net = cnnfpga.Net(str(path))
    with pytest.raises(InputError, match="got data for a but not for b"):
        net.forward(a=np.ones((1, 3, 8, 8)))
    assert net.forward(a=np.ones((1, 3, 8, 8)), b=np.ones((1, 3, 8, 8)))["sum"].sum() == 2 * 3 * 8 * 8


def test_an_image_too_large_to_decode_is_one_line(tmp_path, capsys):
    """A PNG header claiming 20000 x 20000 pixels: Pillow's decompression-bomb guard, reported as such."""
    import struct
    import zlib
    from cnnfpga.cli import main
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data +
                                struct.pack(">I", zlib.crc32(kind + data)))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    cat = str(Path(__file__).resolve().parents[1] / "prototxt" / "chelsea.png")
    status = main(["classify", str(bomb), cat, "--net", "cifar10_quick.prototxt"])
    err = capsys.readouterr().err
    assert status == 1 and f"error: {bomb}: image too large" in err and "Traceback" not in err


def test_a_net_with_nothing_after_its_input_is_refused_by_classify(tmp_path, capsys):
    from cnnfpga.cli import main
    path = tmp_path / "only_input.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 '
                    'dim: 8 } } }\n')
    cat = str(Path(__file__).resolve().parents[1] / "prototxt" / "chelsea.png")
    assert main(["classify", cat, "--net", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no layer after the input" in err and "warning" not in err
