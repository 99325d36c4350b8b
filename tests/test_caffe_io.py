"""Caffe model I/O: prototxt reading (V1 upgrade, TEST filtering, line numbers), caffemodel walker,
writer round trips (also through protobuf and OpenCV), fillers and mean files."""
import re
import struct

import numpy as np
import pytest
from conftest import shared_path

from cnnfpga.caffe import caffe_pb2
from cnnfpga.caffe.fillers import fill
from cnnfpga.caffe.mean import load_mean
from cnnfpga.caffe.reader import read_caffemodel, read_prototxt
from cnnfpga.caffe.writer import write_binaryproto, write_caffemodel
from cnnfpga.errors import ModelFileError, NetDefinitionError, WeightsError

MODELS = ["alexnet/deploy.prototxt", "caffenet/deploy.prototxt", "googlenet/deploy.prototxt",
          "lenet/lenet.prototxt", "lenet_v1/lenet.prototxt", "cifar10_quick/cifar10_quick.prototxt",
          "cifar10_quick_v1/cifar10_quick.prototxt", "cifar10_full/cifar10_full.prototxt",
          "cifar10_full_v1/cifar10_full.prototxt", "resnet50/deploy.prototxt",
          "squeezenet_v1.1/deploy.prototxt", "vgg16/VGG_ILSVRC_16_layers_deploy.prototxt"]
V1_PAIRS = [("lenet_v1/lenet.prototxt", "lenet/lenet.prototxt"),
            ("cifar10_quick_v1/cifar10_quick.prototxt", "cifar10_quick/cifar10_quick.prototxt"),
            ("cifar10_full_v1/cifar10_full.prototxt", "cifar10_full/cifar10_full.prototxt")]


# ----------------------------------------------------------------------------- prototxt

def test_every_shared_prototxt_is_listed():
    found = sorted(str(p.relative_to(shared_path("models"))) for p in shared_path("models").glob("*/*.prototxt"))
    assert found == sorted(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_shared_prototxt_parses_with_right_layer_lines(model):
    path = shared_path("models", model)
    text_lines = path.read_text().splitlines()
    # The shared files all put their layers at column 0 and have no phase rules: count them independently.
    expected_count = sum(1 for line in text_lines if re.match(r"layers? *\{", line))
    net = read_prototxt(path)
    assert net.path == str(path)
    assert len(net.param.layer) == expected_count == len(net.layer_lines)
    assert not net.param.layers  # always upgraded
    ends = net.layer_lines[1:] + [len(text_lines) + 1]
    for layer, start, end in zip(net.param.layer, net.layer_lines, ends):
        assert re.match(r"layers? *\{", text_lines[start - 1])
        body = "\n".join(text_lines[start - 1:end - 1])
        assert f'name: "{layer.name}"' in body
        assert layer.type and layer.type[0].isupper()  # a current type string, never a V1 enum name


def test_known_layer_counts():
    counts = {m: len(read_prototxt(shared_path("models", m)).param.layer) for m in
              ["lenet/lenet.prototxt", "lenet_v1/lenet.prototxt", "googlenet/deploy.prototxt", "resnet50/deploy.prototxt"]}
    assert counts == {"lenet/lenet.prototxt": 9, "lenet_v1/lenet.prototxt": 8,
                      "googlenet/deploy.prototxt": 143, "resnet50/deploy.prototxt": 228}


def test_v1_lenet_upgraded():
    net = read_prototxt(shared_path("models", "lenet_v1", "lenet.prototxt")).param
    assert [l.type for l in net.layer] == ["Convolution", "Pooling", "Convolution", "Pooling",
                                           "InnerProduct", "ReLU", "InnerProduct", "Softmax"]
    conv1 = net.layer[0]
    assert conv1.convolution_param.num_output == 20 and list(conv1.convolution_param.kernel_size) == [5]
    assert conv1.convolution_param.weight_filler.type == "xavier"
    assert [p.lr_mult for p in conv1.param] == [1, 2]  # from blobs_lr
    assert list(net.input) == ["data"] and list(net.input_dim) == [64, 1, 28, 28]  # kept as-is


@pytest.mark.parametrize("v1, current", V1_PAIRS)
def test_v1_upgrade_matches_the_current_format_file(v1, current):
    old = read_prototxt(shared_path("models", v1)).param
    new = {l.name: l for l in read_prototxt(shared_path("models", current)).param.layer if l.type != "Input"}
    assert [l.name for l in old.layer] == list(new)
    for layer in old.layer:
        twin = new[layer.name]
        assert (layer.type, list(layer.bottom), list(layer.top)) == (twin.type, list(twin.bottom), list(twin.top))
        params = [f.name for f, _ in layer.ListFields() if f.name.endswith("_param")]
        for name in params:
            assert getattr(layer, name) == getattr(twin, name), (layer.name, name)


PHASES = """\
name: "phases"  # a comment with layer { in it
input: "data"
input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
layer { name: "train_data" type: "Data" top: "x" include { phase: TRAIN } }
layer {
  name: "test_conv"   # kept: rule met
  type: "Convolution"
  bottom: "data" top: "c"
  include { phase: TEST }
  convolution_param { num_output: 2 kernel_size: 1 }
}
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "c" exclude { phase: TEST } }
layer { name: "deploy_only" type: "ReLU" bottom: "c" include { stage: "deploy" } }
layer { name: "leveled" type: "ReLU" bottom: "c" include { min_level: 1 } }
layer { name: "either" type: "ReLU" bottom: "c" include { phase: TRAIN } include { phase: TEST } }

layer
{
  name: "not_in_train"
  type: "TanH"
  bottom: "c" top: "t"
  exclude { phase: TRAIN }
  exclude { stage: "x" }
}
layer { name: "text \\" layer {" type: "ReLU" bottom: "t" }
"""


def test_test_phase_filtering_and_lines(tmp_path):
    path = tmp_path / "phases.prototxt"
    path.write_text(PHASES)
    net = read_prototxt(path)
    assert [l.name for l in net.param.layer] == ["test_conv", "either", "not_in_train", 'text " layer {']
    assert net.layer_lines == [5, 15, 17, 25]


def test_level_and_stage_come_from_the_file_state(tmp_path):
    path = tmp_path / "state.prototxt"
    path.write_text('state { level: 2 stage: "deploy" }\n' + PHASES.split("\n", 1)[1])
    names = [l.name for l in read_prototxt(path).param.layer]
    assert "deploy_only" in names and "leveled" in names and "train_data" not in names


def test_v1_filtering_uses_upgraded_rules(tmp_path):
    path = tmp_path / "v1.prototxt"
    path.write_text('layers {\n  name: "d" type: DATA top: "x" include { phase: TRAIN }\n}\n'
                    'layers {\n  name: "acc" type: ACCURACY bottom: "x" include: { phase: TEST }\n}\n'
                    'layers {\n  name: "sl" type: SOFTMAX_LOSS bottom: "x" blobs_lr: 3 weight_decay: 0.5 }\n')
    net = read_prototxt(path)
    assert [(l.name, l.type) for l in net.param.layer] == [("acc", "Accuracy"), ("sl", "SoftmaxWithLoss")]
    assert net.layer_lines == [4, 7]
    assert (net.param.layer[1].param[0].lr_mult, net.param.layer[1].param[0].decay_mult) == (3, 0.5)


def test_list_syntax_layers_get_their_own_lines(tmp_path):
    path = tmp_path / "list.prototxt"
    path.write_text('name: "l"\nlayer: [\n  { name: "a" type: "ReLU" },\n\n  { name: "b" type: "ReLU" }\n]\n')
    net = read_prototxt(path)
    assert [l.name for l in net.param.layer] == ["a", "b"] and net.layer_lines == [3, 5]


def test_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "bom.prototxt"
    path.write_bytes(b'\xef\xbb\xbfname: "bom"\nlayer { name: "a" type: "ReLU" }\n')
    net = read_prototxt(path)
    assert net.param.name == "bom" and net.layer_lines == [2]


def test_include_and_exclude_together_is_refused(tmp_path):
    path = tmp_path / "both.prototxt"
    path.write_text('name: "b"\n\nlayer { name: "r" type: "ReLU" include { phase: TEST } exclude { phase: TRAIN } }\n')
    with pytest.raises(NetDefinitionError, match=r"both\.prototxt:3 .*'r'"):
        read_prototxt(path)


@pytest.mark.parametrize("content, pattern", [
    (b"", r"empty file"),
    (b"  \n\t\n", r"empty file"),
    (b'name: "x"\nlayer {\n  name: "a"\n', r"bad\.prototxt:3:9: syntax error: Expected \"}\""),
    (b'name: "x"\nlayer {\n  nme: "a"\n}\n', r"bad\.prototxt:3:3: unknown field: .*nme"),
    (b'name: "x"\nlayer { name: 5 }\n', r"bad\.prototxt:2:15: syntax error"),
    (b'layers {\n  type: CONVOLUTIONS\n}\n', r"bad\.prototxt:2:\d+: syntax error: .*CONVOLUTIONS"),
    (b'name: "x"\n\nlayer { name: "\xff\xfe" }\n', r"bad\.prototxt:3: not UTF-8"),
    (b'layer { name: "a" }\nlayers { name: "b" }\n', r"bad\.prototxt: mixes"),
])
def test_prototxt_errors(tmp_path, content, pattern):
    path = tmp_path / "bad.prototxt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=pattern):
        read_prototxt(path)


def test_prototxt_missing_and_directory(tmp_path):
    with pytest.raises(ModelFileError, match=r"nothere\.prototxt: no such file"):
        read_prototxt(tmp_path / "nothere.prototxt")
    with pytest.raises(ModelFileError, match=re.escape(str(tmp_path)) + ": is a directory"):
        read_prototxt(tmp_path)


def test_binary_caffemodel_given_as_prototxt():
    with pytest.raises(ModelFileError, match=r"lenet_iter_10000\.caffemodel:\d+: not UTF-8"):
        read_prototxt(shared_path("models", "lenet", "lenet_iter_10000.caffemodel"))


# ----------------------------------------------------------------------------- caffemodel

def shapes(layers):
    return {l.name: [b.shape for b in l.blobs] for l in layers if l.blobs}


def test_lenet_current_format():
    layers = read_caffemodel(shared_path("models", "lenet", "lenet_iter_10000.caffemodel"))
    assert shapes(layers) == {"conv1": [(20, 1, 5, 5), (20,)], "conv2": [(50, 20, 5, 5), (50,)],
                              "ip1": [(500, 800), (500,)], "ip2": [(10, 500), (10,)]}
    assert [l.type for l in layers] == ["Data", "Convolution", "Pooling", "Convolution", "Pooling",
                                        "InnerProduct", "ReLU", "InnerProduct", "SoftmaxWithLoss"]
    for layer in layers:
        for blob in layer.blobs:
            assert blob.dtype == np.float32 and np.isfinite(blob).all() and blob.flags.writeable
            assert blob.flags.c_contiguous


def test_lenet_v1_format():
    layers = read_caffemodel(shared_path("models", "lenet_v1", "lenet_iter_10000.caffemodel"))
    assert shapes(layers) == {"conv1": [(20, 1, 5, 5), (1, 1, 1, 20)], "conv2": [(50, 20, 5, 5), (1, 1, 1, 50)],
                              "ip1": [(1, 1, 500, 800), (1, 1, 1, 500)], "ip2": [(1, 1, 10, 500), (1, 1, 1, 10)]}
    assert [l.type for l in layers if l.blobs] == ["Convolution", "Convolution", "InnerProduct", "InnerProduct"]
    assert layers[-1].type == "SoftmaxWithLoss"
    assert all(np.isfinite(b).all() for l in layers for b in l.blobs)


@pytest.mark.parametrize("model", ["lenet/lenet_iter_10000.caffemodel", "lenet_v1/lenet_iter_10000.caffemodel",
                                   "cifar10_quick_v1/cifar10_quick_iter_5000.caffemodel",
                                   "cifar10_full_v1/cifar10_full_iter_70000.caffemodel"])
def test_walker_agrees_with_protobuf(model):
    path = shared_path("models", model)
    net = caffe_pb2.NetParameter.FromString(path.read_bytes())
    expected = list(net.layer) or list(net.layers)
    ours = read_caffemodel(path)
    assert [l.name for l in ours] == [l.name for l in expected]
    for mine, theirs in zip(ours, expected):
        assert len(mine.blobs) == len(theirs.blobs)
        for blob, proto in zip(mine.blobs, theirs.blobs):
            dims = tuple(proto.shape.dim) or (proto.num, proto.channels, proto.height, proto.width)
            assert blob.shape == dims
            assert np.array_equal(blob.ravel(), np.array(proto.data, np.float32))


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def length_field(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def test_unpacked_legacy_and_double_encodings(tmp_path):
    values = np.arange(1, 13, dtype=np.float32) / 7
    unpacked = b"".join(b"\x2d" + struct.pack("<f", v) for v in values[:5])
    packed = length_field(5, values[5:].astype("<f4").tobytes())
    legacy_dims = b"".join(varint(f << 3) + varint(d) for f, d in zip((1, 2, 3, 4), (1, 3, 2, 2)))
    mixed_blob = legacy_dims + unpacked + packed  # 5 unpacked floats, then a packed chunk of 7
    doubles = np.linspace(-1, 1, 6)
    double_blob = (length_field(7, length_field(1, varint(2) + varint(3)))
                   + b"".join(b"\x41" + struct.pack("<d", d) for d in doubles[:2])
                   + length_field(8, doubles[2:].astype("<f8").tobytes()))
    layer = (length_field(1, b"mixed") + length_field(2, b"Convolution") + length_field(7, mixed_blob)
             + length_field(7, double_blob) + length_field(99, b"unknown layer fields are skipped"))
    v1_layer = length_field(4, b"old") + varint(5 << 3) + varint(14) + length_field(6, legacy_dims + packed)
    path = tmp_path / "hand.caffemodel"
    path.write_bytes(length_field(1, b"hand") + length_field(100, layer) + length_field(2, v1_layer))
    with pytest.raises(ModelFileError, match=r"hand\.caffemodel: byte \d+ in layer #1 'old', blob 0: 7 values "
                                             r"but shape \(1, 3, 2, 2\) needs 12"):
        read_caffemodel(path)
    path.write_bytes(length_field(1, b"hand") + length_field(100, layer))
    (mixed,) = read_caffemodel(path)
    assert (mixed.name, mixed.type) == ("mixed", "Convolution")
    assert mixed.blobs[0].shape == (1, 3, 2, 2) and np.array_equal(mixed.blobs[0].ravel(), values)
    assert mixed.blobs[1].dtype == np.float32 and mixed.blobs[1].shape == (2, 3)
    assert np.array_equal(mixed.blobs[1].ravel(), doubles.astype(np.float32))


def test_unpacked_shape_dims(tmp_path):
    data = np.arange(12, dtype=np.float32)
    blob = length_field(7, b"\x08\x04\x08\x03") + length_field(5, data.tobytes())  # dim: 4, dim: 3 unpacked
    path = tmp_path / "dims.caffemodel"
    path.write_bytes(length_field(100, length_field(1, b"ip") + length_field(7, blob)))
    (layer,) = read_caffemodel(path)
    assert layer.blobs[0].shape == (4, 3) and np.array_equal(layer.blobs[0].ravel(), data)


def test_caffemodel_missing_empty_directory(tmp_path):
    with pytest.raises(ModelFileError, match=r"gone\.caffemodel: no such file"):
        read_caffemodel(tmp_path / "gone.caffemodel")
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty\.caffemodel: empty file"):
        read_caffemodel(tmp_path / "empty.caffemodel")
    with pytest.raises(ModelFileError, match="is a directory"):
        read_caffemodel(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.999, 100 / 1725006])
def test_truncated_caffemodel(tmp_path, keep):
    data = shared_path("models", "lenet", "lenet_iter_10000.caffemodel").read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ModelFileError, match=r"cut\.caffemodel: byte \d+ .*(past the end|remain)"):
        read_caffemodel(path)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_are_refused(tmp_path, seed):
    path = tmp_path / "noise.caffemodel"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelFileError, match=r"noise\.caffemodel: (byte \d+|no layers)"):
        read_caffemodel(path)


def test_text_prototxt_given_as_caffemodel(tmp_path):
    path = tmp_path / "lenet.caffemodel"
    for prefix in (b"", "# café net\n".encode()):
        path.write_bytes(prefix + shared_path("models", "lenet", "lenet.prototxt").read_bytes())
        with pytest.raises(ModelFileError, match=r"lenet\.caffemodel: this is a text file"):
            read_caffemodel(path)


def test_mean_file_given_as_caffemodel():
    with pytest.raises(ModelFileError, match=r"imagenet_mean\.binaryproto: byte 0 .*field 1 has wire type 0"):
        read_caffemodel(shared_path("data", "ilsvrc12", "imagenet_mean.binaryproto"))


def test_bad_wire_type_and_overlong_varint(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(length_field(100, length_field(1, b"a") + b"\x0f"))  # wire type 7
    with pytest.raises(ModelFileError, match=r"bad\.caffemodel: byte 6 in layer #0 'a': invalid wire type 7"):
        read_caffemodel(path)
    path.write_bytes(length_field(1, b"n") + b"\x20" + b"\xff" * 11)
    with pytest.raises(ModelFileError, match=r"bad\.caffemodel: byte 4 .*varint longer than 10 bytes"):
        read_caffemodel(path)


# ----------------------------------------------------------------------------- writer

def test_round_trip_is_bit_identical(tmp_path):
    rng = np.random.default_rng(3)
    odd = np.array([np.nan, -np.inf, np.inf, -0.0, 1e-45, 3.4e38], np.float32)
    layers = [("conv", "Convolution", [rng.standard_normal((8, 3, 3, 3), dtype=np.float32), odd]),
              ("ip", "InnerProduct", [rng.standard_normal((4, 300)).astype(np.float64),  # converted
                                      np.arange(4, dtype=np.int32)]),
              ("relu", "ReLU", []),
              ("scalar", "Scale", [np.float32(2.5), np.zeros((0, 5), np.float32)]),
              ("ünïcode", "Convolution", [rng.standard_normal((3, 4), dtype=np.float32)[:, ::2]])]  # strided
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, "round", layers)
    back = read_caffemodel(path)
    assert [(l.name, l.type) for l in back] == [(n, t) for n, t, _ in layers]
    for (_, _, blobs), layer in zip(layers, back):
        assert len(layer.blobs) == len(blobs)
        for want, got in zip(blobs, layer.blobs):
            want = np.asarray(want, np.float32)
            assert got.shape == want.shape and got.tobytes() == want.tobytes()
    again = tmp_path / "again.caffemodel"
    write_caffemodel(again, "round", [(l.name, l.type, l.blobs) for l in back])
    assert again.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.caffemodel", "net.caffemodel"]  # no temp files


def test_protobuf_reads_what_we_write(tmp_path):
    weights = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "pb.caffemodel"
    write_caffemodel(path, "pbnet", [("a", "InnerProduct", [weights, np.ones(2, np.float32)])])
    net = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert net.name == "pbnet" and len(net.layer) == 1 and not net.layers
    layer = net.layer[0]
    assert (layer.name, layer.type) == ("a", "InnerProduct")
    assert list(layer.blobs[0].shape.dim) == [2, 3, 4] and list(layer.blobs[1].shape.dim) == [2]
    assert np.array_equal(np.array(layer.blobs[0].data, np.float32), weights.ravel())


def lenet_filler_layers(seed):
    rng = np.random.default_rng(seed)
    xavier = caffe_pb2.FillerParameter(type="xavier")
    bias = caffe_pb2.FillerParameter(type="uniform", min=-0.1, max=0.1)
    specs = [("conv1", "Convolution", (20, 1, 5, 5)), ("conv2", "Convolution", (50, 20, 5, 5)),
             ("ip1", "InnerProduct", (500, 800)), ("ip2", "InnerProduct", (10, 500))]
    return [(n, t, [fill(xavier, s, rng), fill(bias, s[:1], rng)]) for n, t, s in specs]


def test_opencv_reads_our_file(tmp_path):
    cv2 = pytest.importorskip("cv2")
    prototxt = str(shared_path("models", "lenet", "lenet.prototxt"))
    ours = tmp_path / "lenet_filled.caffemodel"
    write_caffemodel(ours, "LeNet", lenet_filler_layers(seed=1))
    net = cv2.dnn.readNetFromCaffe(prototxt, str(ours))
    image = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    net.setInput(image)
    prob = net.forward()
    assert prob.shape == (2, 10) and np.allclose(prob.sum(axis=1), 1, atol=1e-5)
    # OpenCV must see exactly our values: the trained weights rewritten by us give the original's output.
    original = shared_path("models", "lenet", "lenet_iter_10000.caffemodel")
    rewritten = tmp_path / "lenet_rewritten.caffemodel"
    write_caffemodel(rewritten, "LeNet", [(l.name, l.type, l.blobs) for l in read_caffemodel(original)])
    outputs = []
    for weights in (original, rewritten):
        net = cv2.dnn.readNetFromCaffe(prototxt, str(weights))
        net.setInput(image)
        outputs.append(net.forward())
    assert np.array_equal(outputs[0], outputs[1])
    assert not np.allclose(outputs[0], prob)  # and the filler weights really were different weights


def test_failed_write_leaves_nothing_behind(tmp_path):
    path = tmp_path / "keep.caffemodel"
    write_caffemodel(path, "old", [("a", "ReLU", [])])
    before = path.read_bytes()

    def layers():
        yield "conv", "Convolution", [np.ones((4, 4), np.float32)]
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError, match="generator died"):
        write_caffemodel(path, "new", layers())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.caffemodel"]
    with pytest.raises(WeightsError, match=r"keep\.caffemodel: layer 'x', blob 1 is not a numeric array"):
        write_caffemodel(path, "new", [("x", "ReLU", [np.ones(2), np.array(["a"])])])
    assert [p.name for p in tmp_path.iterdir()] == ["keep.caffemodel"]


def test_write_into_missing_folder(tmp_path):
    with pytest.raises(ModelFileError, match=r"nofolder.*x\.caffemodel: cannot write"):
        write_caffemodel(tmp_path / "nofolder" / "x.caffemodel", "n", [])


def test_binaryproto_round_trip(tmp_path):
    mean = np.random.default_rng(5).random((3, 5, 7), dtype=np.float32) * 255
    path = tmp_path / "mean.binaryproto"
    write_binaryproto(path, mean)
    blob = caffe_pb2.BlobProto.FromString(path.read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 7)
    assert list(blob.shape.dim) == [1, 3, 5, 7]
    back = load_mean(path)
    assert back.shape == (3, 5, 7) and back.tobytes() == mean.tobytes()


# ----------------------------------------------------------------------------- fillers

def filler(**fields):
    return caffe_pb2.FillerParameter(**fields)


def test_filler_constant_and_default():
    rng = np.random.default_rng(0)
    assert np.array_equal(fill(None, (3, 2), rng), np.zeros((3, 2), np.float32))
    out = fill(filler(type="constant", value=0.25), (4, 5), rng)
    assert out.dtype == np.float32 and out.shape == (4, 5) and (out == 0.25).all()
    assert (fill(filler(), (3,), rng) == 0).all()  # FillerParameter defaults to constant 0


def test_filler_gaussian_and_uniform_statistics():
    rng = np.random.default_rng(1)
    g = fill(filler(type="gaussian", mean=2.0, std=0.5), (500, 800), rng)
    assert g.dtype == np.float32 and abs(g.mean() - 2.0) < 0.005 and abs(g.std() - 0.5) < 0.005
    u = fill(filler(type="uniform", min=-3.0, max=1.0), (500, 800), rng)
    assert u.min() >= -3.0 and u.max() <= 1.0 and abs(u.mean() + 1.0) < 0.01
    assert abs(u.std() - 4 / np.sqrt(12)) < 0.01


@pytest.mark.parametrize("norm, n", [(None, 20 * 9), ("FAN_IN", 20 * 9), ("FAN_OUT", 50 * 9),
                                     ("AVERAGE", (20 * 9 + 50 * 9) / 2)])
def test_filler_xavier_and_msra(norm, n):
    shape = (50, 20, 3, 3)  # fan_in = 20*3*3, fan_out = 50*3*3
    extra = {} if norm is None else {"variance_norm": getattr(caffe_pb2.FillerParameter, norm)}
    big = (shape[0] * 40,) + shape[1:]  # more samples, same fan-in; fan-out scaled below
    rng = np.random.default_rng(2)
    x = fill(filler(type="xavier", **extra), shape, rng)
    bound = np.sqrt(3 / n)
    assert np.abs(x).max() <= bound and np.abs(x).max() > 0.95 * bound
    m = fill(filler(type="msra", **extra), big, rng)
    n_big = {None: n, "FAN_IN": n, "FAN_OUT": n * 40, "AVERAGE": (20 * 9 + 50 * 40 * 9) / 2}[norm]
    assert abs(m.std() - np.sqrt(2 / n_big)) < 0.01 * np.sqrt(2 / n_big) and abs(m.mean()) < 0.01 * m.std()


def test_filler_seeded_reproducibility():
    spec = filler(type="gaussian", std=0.1)
    a = fill(spec, (64, 32), np.random.default_rng(7))
    b = fill(spec, (64, 32), np.random.default_rng(7))
    c = fill(spec, (64, 32), np.random.default_rng(8))
    assert a.tobytes() == b.tobytes() and not np.array_equal(a, c)


def test_filler_sparse_unitball_bilinear():
    rng = np.random.default_rng(4)
    sparse = fill(filler(type="gaussian", sparse=25), (100, 4000), rng)
    assert abs((sparse != 0).mean() - 0.25) < 0.01
    ball = fill(filler(type="positive_unitball"), (6, 3, 4, 4), rng)
    assert (ball >= 0).all() and np.allclose(ball.reshape(6, -1).sum(axis=1), 1)
    bilinear = fill(filler(type="bilinear"), (2, 1, 4, 4), rng)
    ramp = np.array([0.25, 0.75, 0.75, 0.25], np.float32)  # upsampling by 2
    assert np.allclose(bilinear[1, 0], np.outer(ramp, ramp))


def test_filler_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(NetDefinitionError, match=r"net\.prototxt:4 \(layer 'c'\): unknown filler type 'Xavier'"):
        fill(filler(type="Xavier"), (2, 2), rng, where="net.prototxt:4 (layer 'c')")
    with pytest.raises(NetDefinitionError, match="bilinear filler needs a 4-D blob"):
        fill(filler(type="bilinear"), (2, 3, 4), rng)
    with pytest.raises(NetDefinitionError, match="non-empty"):
        fill(filler(type="xavier"), (0, 3), rng)


# ----------------------------------------------------------------------------- means

def test_imagenet_means():
    binary = load_mean(shared_path("data", "ilsvrc12", "imagenet_mean.binaryproto"))
    npy = load_mean(shared_path("data", "ilsvrc12", "ilsvrc_2012_mean.npy"))
    assert binary.shape == npy.shape == (3, 256, 256) and binary.dtype == npy.dtype == np.float32
    assert np.allclose(binary.mean(axis=(1, 2)), [103.89, 116.55, 122.58], atol=0.01)
    assert np.allclose(npy.mean(axis=(1, 2)), [104.01, 116.67, 122.68], atol=0.01)


def test_npy_means_with_and_without_num(tmp_path):
    mean = np.arange(24, dtype=np.float64).reshape(1, 2, 3, 4)
    np.save(tmp_path / "four.npy", mean)
    np.save(tmp_path / "three.npy", mean[0])
    for name in ("four.npy", "three.npy"):
        got = load_mean(tmp_path / name)
        assert got.dtype == np.float32 and np.array_equal(got, mean[0])


def test_mean_errors(tmp_path):
    cases = {"gone.npy": None, "empty.binaryproto": b"", "noise.binaryproto": b"\x0f\xff\x00\x01",
             "short.binaryproto": length_field(5, b"\x00" * 16)[:-3], "flat.npy": np.zeros((3, 4)),
             "junk.npy": b"not numpy at all", "objects.npy": np.array([{"a": 1}], dtype=object),
             "mean.png": b"\x89PNG", "batch.binaryproto": None, "words.npy": np.array(["a", "b"])}
    patterns = {"gone.npy": "no such file", "empty.binaryproto": "empty file", "noise.binaryproto": "byte 0",
                "short.binaryproto": "byte 0", "flat.npy": r"\(C, H, W\).*\(3, 4\)", "junk.npy": "not a readable",
                "objects.npy": "not a readable", "mean.png": "unknown mean file extension '.png'",
                "batch.binaryproto": r"got shape \(2, 3, 1, 1\)", "words.npy": "expected real numbers"}
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, np.ndarray):
            np.save(path, content, allow_pickle=True)
        elif name == "batch.binaryproto":
            write_binaryproto(path, np.zeros((2, 3, 1, 1), np.float32))
        with pytest.raises(ModelFileError) as info:
            load_mean(path)
        assert name in str(info.value) and re.search(patterns[name], str(info.value)), str(info.value)
