"""The pycaffe-shaped API: cnnfpga.Net (blobs, params, forward, reshape, save) and cnnfpga.io."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

import cnnfpga
from cnnfpga import InputError, Net
from cnnfpga.io import Transformer, load_image

from conftest import shared_path
from data_sets import mnist_test


@pytest.fixture(scope="module")
def lenet_files():
    return (str(shared_path("models", "lenet", "lenet.prototxt")),
            str(shared_path("models", "lenet", "lenet_iter_10000.caffemodel")))


@pytest.fixture(scope="module")
def digits():
    images, labels = mnist_test(shared_path("data", "mnist"), count=8)
    return images[:, None].astype(np.float32) * np.float32(0.00390625), labels


@pytest.fixture
def lenet(lenet_files):
    return Net(*lenet_files)


def test_structure(lenet):
    assert lenet.inputs == ["data"] and lenet.outputs == ["prob"]
    assert [(layer.name, layer.type) for layer in lenet.layers] == [
        ("data", "Input"), ("conv1", "Convolution"), ("pool1", "Pooling"), ("conv2", "Convolution"),
        ("pool2", "Pooling"), ("ip1", "InnerProduct"), ("relu1", "ReLU"), ("ip2", "InnerProduct"), ("prob", "Softmax")]
    assert lenet.blobs["data"].data.shape == (64, 1, 28, 28)
    assert lenet.blobs["pool2"].data.shape == (64, 50, 4, 4)
    assert list(lenet.params) == ["conv1", "conv2", "ip1", "ip2"]
    assert [p.data.shape for p in lenet.params["conv1"]] == [(20, 1, 5, 5), (20,)]
    assert lenet.params["ip1"][0].data.shape == (500, 800)


def test_params_hold_the_caffemodel_values(lenet, lenet_files):
    theirs = cv2.dnn.readNetFromCaffe(*lenet_files)
    for name, blobs in lenet.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_array_equal(blob.data.ravel(), theirs.getParam(name, i).ravel())


def test_forward_with_keywords_follows_the_batch_size(lenet, digits):
    x, labels = digits
    out = lenet.forward(data=x)
    assert list(out) == ["prob"] and out["prob"].shape == (8, 10)
    assert (out["prob"].argmax(axis=1) == labels).all()
    np.testing.assert_allclose(out["prob"].sum(axis=1), 1.0, rtol=1e-5)
    assert lenet.blobs["conv1"].data.shape == (8, 20, 24, 24)  # every blob followed the new batch
    # each image's result does not depend on the rest of the batch
    single = lenet.forward(data=x[3:4])["prob"]
    np.testing.assert_allclose(single[0], out["prob"][3], rtol=1e-5, atol=1e-7)


def test_blob_reshape_then_forward(lenet, digits):
    x, _ = digits
    lenet.blobs["data"].reshape(3, 1, 28, 28)
    assert lenet.blobs["data"].data.shape == (3, 1, 28, 28)
    lenet.blobs["data"].data[...] = x[:3]
    out = lenet.forward()
    assert out["prob"].shape == (3, 10) and lenet.blobs["ip2"].data.shape == (3, 10)
    reference = lenet.forward(data=x)["prob"][:3]
    np.testing.assert_allclose(out["prob"], reference, rtol=1e-5, atol=1e-7)


def test_forward_can_return_more_blobs(lenet, digits):
    x, _ = digits
    out = lenet.forward(blobs=["ip1", "pool1"], data=x)
    assert set(out) == {"prob", "ip1", "pool1"}
    assert (out["ip1"] >= 0).all()  # relu1 works in place on ip1
    assert out["pool1"].shape == (8, 20, 12, 12)


def test_changing_a_param_changes_the_output(lenet, digits):
    x, _ = digits
    before = lenet.forward(data=x)["prob"].copy()
    lenet.params["conv1"][0].data[...] = 0  # conv1 now outputs its bias everywhere
    after = lenet.forward(data=x)["prob"]
    assert not np.allclose(before, after, atol=1e-3)
    bias = lenet.params["conv1"][1].data
    np.testing.assert_allclose(lenet.blobs["conv1"].data, np.broadcast_to(bias[None, :, None, None], (8, 20, 24, 24)))
    # the same images now give one answer: the input no longer reaches past conv1
    np.testing.assert_allclose(after, np.broadcast_to(after[0], after.shape), rtol=1e-5)


def test_save_round_trip_and_opencv_reads_it(lenet, lenet_files, digits, tmp_path):
    x, _ = digits
    lenet.params["ip2"][0].data[...] *= np.float32(0.5)  # saved weights must be the current ones
    ours = lenet.forward(data=x)["prob"].copy()
    path = tmp_path / "saved.caffemodel"
    lenet.save(str(path))
    again = Net(lenet_files[0], str(path))
    np.testing.assert_array_equal(again.forward(data=x)["prob"], ours)
    for name in lenet.params:
        for mine, reloaded in zip(lenet.params[name], again.params[name]):
            np.testing.assert_array_equal(mine.data, reloaded.data)
    opencv = cv2.dnn.readNetFromCaffe(lenet_files[0], str(path))
    opencv.setInput(x)
    np.testing.assert_allclose(opencv.forward(), ours, atol=1e-5)
    assert not np.allclose(Net(*lenet_files).forward(data=x)["prob"], ours, atol=1e-4)


def test_v1_net_saves_in_the_current_format(tmp_path, digits):
    """A V1 prototxt + V1 caffemodel, saved, loads with the current-format prototxt."""
    x, _ = digits
    old = Net(str(shared_path("models", "lenet_v1", "lenet.prototxt")),
              str(shared_path("models", "lenet_v1", "lenet_iter_10000.caffemodel")))
    path = tmp_path / "v1_saved.caffemodel"
    old.save(str(path))
    new = Net(str(shared_path("models", "lenet", "lenet.prototxt")), str(path))
    np.testing.assert_array_equal(new.forward(data=x)["prob"], old.forward(data=x)["prob"])


def test_without_weights_fillers_and_a_warning(lenet_files):
    with pytest.warns(UserWarning, match="fillers"):
        net = Net(lenet_files[0])
    with pytest.warns(UserWarning, match="fillers"):
        same = Net(lenet_files[0], seed=0)
    np.testing.assert_array_equal(net.params["ip1"][0].data, same.params["ip1"][0].data)
    assert np.std(net.params["ip1"][0].data) > 0


def test_bundled_names_resolve_from_any_directory(tmp_path, monkeypatch, lenet_files, digits):
    x, _ = digits
    monkeypatch.chdir(tmp_path)
    bundled = Net("lenet.prototxt", "lenet.caffemodel")
    assert os.path.isabs(bundled.net_file) and bundled.net_file.endswith("lenet.prototxt")
    np.testing.assert_array_equal(bundled.forward(data=x)["prob"], Net(*lenet_files).forward(data=x)["prob"])
    with pytest.raises(cnnfpga.ModelFileError, match="lenet.prototxt"):
        Net("nets/lenet.prototxt")  # a path with a folder is never looked up among the bundled nets


def test_bundled_names_in_a_fresh_interpreter(tmp_path):
    """The installed package (not the source tree on sys.path) finds its bundled nets."""
    code = ("import warnings; warnings.simplefilter('ignore'); import cnnfpga; "
            "net = cnnfpga.Net('cifar10_quick.prototxt', 'cifar10_quick.caffemodel'); "
            "print(net.forward()['prob'].shape, cnnfpga.CnnfpgaError.__name__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 10) CnnfpgaError"


# ---------------------------------------------------------------- cnnfpga.io

def test_transformer_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    image = rng.random((5, 7, 3), dtype=np.float32)  # (H, W, C) RGB in [0, 1]
    mean = np.array([104.0, 117.0, 123.0], dtype=np.float32)
    t = Transformer({"data": (1, 3, 5, 7)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.017)
    out = t.preprocess("data", image)
    for c, source in enumerate((2, 1, 0)):  # BGR from RGB
        for y in range(5):
            for x in range(7):
                expected = (float(image[y, x, source]) * 255.0 - float(mean[c])) * 0.017
                assert abs(out[c, y, x] - expected) < 1e-4
    assert out.dtype == np.float32 and out.shape == (3, 5, 7)
    np.testing.assert_allclose(t.deprocess("data", out), image, atol=1e-5)


def test_transformer_resizes_and_crops_a_mean_image():
    t = Transformer({"data": (1, 3, 227, 227)})
    t.set_transpose("data", (2, 0, 1))
    mean_image = np.arange(3 * 256 * 256, dtype=np.float32).reshape(3, 256, 256)
    t.set_mean("data", mean_image)
    constant = np.full((300, 400, 3), 0.25, dtype=np.float32)
    out = t.preprocess("data", constant)
    assert out.shape == (3, 227, 227)
    np.testing.assert_allclose(out, 0.25 - mean_image[:, 14:241, 14:241], rtol=1e-6)  # (256 - 227) // 2 = 14
    with pytest.raises(InputError, match="'image'"):
        t.set_raw_scale("image", 255)
    with pytest.raises(InputError, match="2 values"):
        t.set_mean("data", [1.0, 2.0])


def save(tmp_path, image: Image.Image, name: str) -> str:
    path = str(tmp_path / name)
    image.save(path)
    return path


def test_load_image_rgb_and_greyscale(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    loaded = load_image(save(tmp_path, Image.fromarray(rgb), "rgb.png"))
    assert loaded.shape == (6, 5, 3) and loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, rgb / 255.0, atol=1e-6)
    grey = rgb[..., 0]
    path = save(tmp_path, Image.fromarray(grey, mode="L"), "grey.png")
    np.testing.assert_allclose(load_image(path), np.repeat(grey[..., None], 3, axis=2) / 255.0, atol=1e-6)
    assert load_image(path, color=False).shape == (6, 5, 1)


def test_load_image_rgba_drops_alpha(tmp_path):
    """As Caffe's loaders do: the colour channels stay as they are, whatever the alpha."""
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[..., 3] = [[0, 255], [128, 10]]
    loaded = load_image(save(tmp_path, Image.fromarray(rgba, mode="RGBA"), "rgba.png"))
    assert loaded.shape == (2, 2, 3)
    np.testing.assert_allclose(loaded, np.broadcast_to(np.array([200, 100, 50]) / 255.0, (2, 2, 3)), atol=1e-6)


def test_load_image_palette(tmp_path):
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    image.putdata([2, 0, 1])
    loaded = load_image(save(tmp_path, image, "palette.png"))
    np.testing.assert_allclose(loaded[0], np.array([[10, 20, 30], [255, 0, 0], [0, 255, 0]]) / 255.0, atol=1e-6)


def test_load_image_cmyk(tmp_path):
    image = Image.new("CMYK", (4, 1))
    for x, cmyk in enumerate([(0, 0, 0, 0), (255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0)]):
        image.putpixel((x, 0), cmyk)
    loaded = load_image(save(tmp_path, image, "cmyk.tif"))
    expected = np.array([[1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=np.float32)  # white, cyan, magenta, yellow
    np.testing.assert_allclose(loaded[0], expected, atol=1e-6)


def test_load_image_16_bit_keeps_its_precision(tmp_path):
    values = np.array([[0, 256, 257, 32768, 65535]], dtype=np.uint16)
    path = save(tmp_path, Image.fromarray(values), "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    loaded = load_image(path)
    assert loaded.shape == (1, 5, 3) and loaded.min() >= 0 and loaded.max() <= 1
    np.testing.assert_allclose(loaded[0, :, 0], values[0] / 65535.0, rtol=1e-6)
    assert loaded[0, 2, 0] > loaded[0, 1, 0]  # 256 and 257 stay apart: more than 8 bits survive


def test_load_image_errors(tmp_path):
    with pytest.raises(InputError, match="nothing.png"):
        load_image(str(tmp_path / "nothing.png"))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="junk.png"):
        load_image(str(junk))


def test_opencl_source_for_aoc_needs_no_device(monkeypatch):
    """The aoc source comes from the plan alone: no OpenCL platform is asked for."""
    import pyopencl

    def no_platforms():
        raise AssertionError("opencl_source must not touch OpenCL")

    monkeypatch.setattr(pyopencl, "get_platforms", no_platforms)
    with pytest.warns(UserWarning):
        net = cnnfpga.Net("cifar10_quick.prototxt", backend="opencl", precision={"conv1": "float", "*": "fixed16"})
    with pytest.warns(UserWarning, match="no calibration statistics"):  # fixed16 without calibration says so
        source = net.opencl_source()
    # conv1 pool1 relu1 conv2(+relu2) pool2 conv3(+relu3) pool3: one kernel per stage, ReLUs after convs fused
    assert source.count("__kernel") == 7
    assert "#pragma OPENCL EXTENSION cl_intel_channels" in source or "cl_intel_channels" in source


def test_net_counts_cycles_when_asked():
    """Net(count_cycles=True) reaches the executor: every device stage reports its loop iterations."""
    net = cnnfpga.Net("lenet.prototxt", backend="opencl", count_cycles=True)
    net.forward(data=np.zeros(net.blobs["data"].data.shape, np.float32))
    cycles = net.executor.cycles()
    assert set(cycles) == {stage.name for stage in net.executor.plan.stages} and all(c > 0 for c in cycles.values())


def test_a_blob_streaming_inside_a_segment_is_written_out_when_asked_for(tmp_path):
    """An inception-like fork: b1 streams from its conv into the concat, never in memory; forward(blobs=
    ["b1"]) builds the net again writing it out, and gives the reference's values."""
    text = """name: "fork"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 6 dim: 6 } } }
layer { name: "b1" type: "Convolution" bottom: "data" top: "b1" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "b2" type: "Convolution" bottom: "data" top: "b2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "cat" type: "Concat" bottom: "b1" bottom: "b2" top: "cat" }
"""
    path = tmp_path / "fork.prototxt"
    path.write_text(text)
    net = cnnfpga.Net(str(path), backend="opencl")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 4, 6, 6)).astype(np.float32)
    net.forward(data=x)
    assert not net.blobs["b1"].data.any()          # streamed: not in memory
    got = net.forward(blobs=["b1"], data=x)["b1"]
    want = cnnfpga.Net(str(path), backend="reference").forward(blobs=["b1"], data=x)["b1"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.blobs["b1"].data, want, rtol=1e-5, atol=1e-6)
