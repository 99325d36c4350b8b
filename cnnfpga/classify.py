"""Classify images with a Caffe net: `python -m cnnfpga.classify image.jpg --net alexnet.prototxt`.

A bundled net's file name is enough (it resolves to the package's prototxt/ folder), and a bundled net
brings its trained weights and its preprocessing (channel order, scale, mean, labels) along.
"""
import argparse
import logging
import math
import os
import sys
import time
import warnings

import numpy as np

from . import bundled
from .bundled import CIFAR10_LABELS
from .caffe.mean import load_mean
from .errors import CnnfpgaError, InputError
from .io import Transformer, load_image
from .net import Net


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m cnnfpga.classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--net", required=True, help="prototxt path, or a bundled net's name (e.g. alexnet.prototxt)")
    parser.add_argument("--weights", help="caffemodel (default: the bundled weights of a bundled net, else fillers)")
    parser.add_argument("--backend", default="reference", choices=["reference", "opencl"])
    parser.add_argument("--device", help="OpenCL platform/device name or P:D index (or set CNNFPGA_DEVICE)")
    parser.add_argument("--precision", help="float, half, fixed16, fixed8, ..., a JSON mapping or file "
                                            "(--backend opencl; default float)")
    parser.add_argument("--mean", help="mean: a .binaryproto/.npy file or comma-separated per-channel values")
    parser.add_argument("--channel-order", choices=["RGB", "BGR"], help="channel order the net expects")
    parser.add_argument("--raw-scale", type=finite_float, help="multiply [0,1] pixels by this (255 for Caffe nets)")
    parser.add_argument("--input-scale", type=finite_float, help="multiply after mean subtraction")
    parser.add_argument("--labels", help="text file, one label per line (ImageNet synset_words.txt works)")
    parser.add_argument("--top", type=positive_int, default=5, help="how many classes to print")
    return parser.parse_args(argv)


def read_labels(args, info) -> list:
    if args.labels:
        if not os.path.isfile(args.labels):
            raise InputError(f"{args.labels}: no such labels file" if not os.path.exists(args.labels)
                             else f"{args.labels}: not a regular file (a labels file has one label per line)")
        try:
            with open(args.labels, encoding="utf-8") as handle:
                return [line.strip() for line in handle if line.strip()]
        except UnicodeDecodeError:
            raise InputError(f"{args.labels}: not a text file (UTF-8, one label per line)") from None
        except OSError as error:
            raise InputError(f"{args.labels}: cannot read the labels file: {error.strerror or error}") from None
    labels = info.get("labels")
    if labels == "cifar10":
        return CIFAR10_LABELS
    return labels if isinstance(labels, list) else None


def make_transformer(net, args, info) -> Transformer:
    name = net.inputs[0]
    transformer = Transformer({name: net.blobs[name].data.shape})
    transformer.set_transpose(name, (2, 0, 1))
    channels = net.blobs[name].data.shape[1]
    if channels == 3 and (args.channel_order or info.get("channel_order", "BGR")) == "BGR":
        transformer.set_channel_swap(name, (2, 1, 0))
    raw_scale = args.raw_scale if args.raw_scale is not None else info.get("raw_scale", 255)
    transformer.set_raw_scale(name, raw_scale)
    if args.mean:
        if os.path.splitext(args.mean)[1] in (".binaryproto", ".npy"):
            transformer.set_mean(name, load_mean(args.mean))
        else:
            try:
                values = [float(v) for v in args.mean.split(",")]
            except ValueError:
                values = None
            if values is None or not all(math.isfinite(v) for v in values):
                raise InputError(f"--mean {args.mean}: expected a .binaryproto/.npy file or finite numbers like "
                                 f"104,117,123")
            transformer.set_mean(name, values)
    elif "mean" in info:
        transformer.set_mean(name, info["mean"])
    input_scale = args.input_scale if args.input_scale is not None else info.get("input_scale")
    if input_scale is not None:
        transformer.set_input_scale(name, input_scale)
    return transformer


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    progress = logging.StreamHandler(sys.stderr)  # our progress lines only, not other libraries' logs
    progress.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("cnnfpga")
    logger.addHandler(progress)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        return classify(args)
    finally:   # main() may be called again in this process, with another stderr
        logger.removeHandler(progress)
        logger.setLevel(level)


def classify(args) -> int:
    try:
        net_path = bundled.resolve(args.net)
        info = bundled.net_info(net_path) if os.path.dirname(net_path) == str(bundled.bundled_folder()) else {}
        weights = args.weights or (bundled.bundled_weights(net_path) if info else None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", UserWarning)
            options = {"device": args.device, "precision": args.precision}
            net = Net(net_path, weights, backend=args.backend,
                      **{key: value for key, value in options.items() if value is not None})
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        name = net.inputs[0]
        color = info.get("color", net.blobs[name].data.shape[1] == 3)
        images = [load_image(path, color=color) for path in args.images]
        transformer = make_transformer(net, args, info)
        batch = np.stack([transformer.preprocess(name, image) for image in images])
        net.blobs[name].reshape(*batch.shape)
        net.reshape()
        net.executor  # build the device program now, so that the time below is the forward alone
        start = time.perf_counter()
        output = net.forward(**{name: batch})[net.outputs[-1]]
        elapsed = time.perf_counter() - start
        labels = read_labels(args, info)
    except CnnfpgaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scores = output.reshape(len(images), -1)
    if labels and len(labels) < scores.shape[1]:   # printed, not refused: the scores are still right
        print(f"warning: {args.labels or 'the labels'} name {len(labels)} classes, the net scores {scores.shape[1]}; "
              f"the others print as 'class N'", file=sys.stderr)
    if labels is None and info.get("labels") == "imagenet":
        print("note: pass --labels synset_words.txt to print ImageNet class names", file=sys.stderr)
    for path, row in zip(args.images, scores):
        print(f"{path}:")
        for index in np.argsort(row)[::-1][:args.top]:
            label = labels[index] if labels and index < len(labels) else f"class {index}"
            print(f"  {row[index]:.4f}  {label}")
    print(f"{len(images)} image(s) through {os.path.basename(net_path)} ({args.backend}) in {elapsed * 1000:.1f} ms",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
