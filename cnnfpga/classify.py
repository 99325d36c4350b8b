"""Classify images (files, folders, globs) with a Caffe net, in batches.

    cnnfpga classify photos/ 'more/*.jpg' cat.png --net alexnet.prototxt [--batch 16] [--json] [--out run.jsonl]
    python -m cnnfpga.classify image.jpg --net alexnet.prototxt          (the same command)

A bundled net's file name is enough (it resolves to the package's prototxt/ folder), and a bundled net
brings its trained weights and its preprocessing (channel order, scale, mean, labels) along. Images are
read and run --batch at a time, so memory does not grow with their number. An image that cannot be
read is reported on stderr and skipped; the exit status is then 1 (0: all classified, 2: nothing could
run). --json prints one JSON object per image on stdout. --out FILE appends the same JSON lines to
FILE, flushed per batch; run the same command again after an interruption and the images already in
FILE are skipped, so that every image ends up in it exactly once.
"""
import argparse
from dataclasses import dataclass, field
import json
import logging
import os
import sys
import time

import numpy as np

from . import bundled
from .bundled import CIFAR10_LABELS
from .caffe.mean import load_mean
from .cli import finite_float, module_main, positive_int
from .errors import InputError
from .io import IMAGE_EXTENSIONS, Transformer, list_images, load_image
from .net import Net

log = logging.getLogger("cnnfpga")
CHANNEL_ORDERS = ("RGB", "BGR")


def add_arguments(parser):
    parser.add_argument("images", nargs="+", help="image files, folders (searched recursively) and glob patterns")
    parser.add_argument("--net", required=True, help="prototxt path, or a bundled net's name (e.g. alexnet.prototxt)")
    parser.add_argument("--weights", help="caffemodel (default: the bundled weights of a bundled net, else fillers)")
    parser.add_argument("--backend", default="reference", choices=["reference", "opencl"])
    parser.add_argument("--variant", choices=["fpga", "fast"],
                        help="OpenCL kernels: fpga (the single work-item FPGA design, default) or fast (CPU/GPU)")
    parser.add_argument("--device", help="OpenCL platform/device name or P:D index (or set CNNFPGA_DEVICE)")
    parser.add_argument("--design", help="a folder `cnnfpga design` wrote: run exactly that design (--backend opencl; "
                                         "it fixes the precision)")
    parser.add_argument("--precision", help="float, half, fixed16, fixed8, ..., a JSON mapping or file "
                                            "(--backend opencl; default float)")
    parser.add_argument("--calibration", help="images (files, folders, globs; comma-separated) or a statistics "
                                              "JSON file that choose fixed-point fractional bits")
    parser.add_argument("--mean", help="mean: a .binaryproto/.npy file or comma-separated per-channel values")
    parser.add_argument("--channel-order", type=str.upper, choices=CHANNEL_ORDERS,
                        help="channel order the net expects (rgb or bgr)")
    parser.add_argument("--raw-scale", type=finite_float, help="multiply [0,1] pixels by this (255 for Caffe nets)")
    parser.add_argument("--input-scale", type=finite_float, help="multiply after mean subtraction")
    parser.add_argument("--labels", help="text file, one label per line (ImageNet synset_words.txt works)")
    parser.add_argument("--top", type=positive_int, default=5, help="how many classes to print (default 5)")
    parser.add_argument("--batch", type=positive_int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    parser.add_argument("--out", help="append JSON lines to this file; images already in it are skipped (resume)")
    parser.add_argument("--quiet", action="store_true", help="nothing per image on stdout (with --out)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    parser.add_argument("--scheduler", help="a Dask scheduler's address (tcp://host:8786): spread the batches over "
                                            "its workers (pip install 'cnnfpga[distributed]')")


# ---------------------------------------------------------------------------------------------- set-up

@dataclass
class Preprocessing:
    """How images become the net's input, and where each choice came from (printed to the user)."""
    channel_order: str
    raw_scale: float
    mean: object = None
    input_scale: float = None
    source: str = "defaults"

    def describe(self, channels: int) -> str:
        mean = "none" if self.mean is None else (self.mean if isinstance(self.mean, str) else
                                                  ",".join(f"{v:g}" for v in self.mean))
        order = self.channel_order if channels == 3 else "greyscale"
        scale = "" if self.input_scale is None else f", input scale {self.input_scale:g}"
        return f"preprocessing ({self.source}): {order}, raw scale {self.raw_scale:g}, mean {mean}{scale}"


def preprocessing(args, info: dict, net_name: str) -> Preprocessing:
    """The user's options over the bundled net's facts over the defaults (BGR, x255, no mean: Caffe's)."""
    given = [args.channel_order, args.raw_scale, args.mean, args.input_scale]
    source = f"prototxt/nets.json for {net_name}" if info else "defaults for a net that is not bundled"
    if any(option is not None for option in given):
        source = "your options" + (f", the rest from {source}" if not all(o is not None for o in given) else "")
    mean = args.mean if args.mean is not None else info.get("mean")
    return Preprocessing(args.channel_order or info.get("channel_order", "BGR"),
                         args.raw_scale if args.raw_scale is not None else info.get("raw_scale", 255), mean,
                         args.input_scale if args.input_scale is not None else info.get("input_scale"), source)


def parse_mean(text: str):
    """A mean file's contents, or per-channel values from 'B,G,R'-style text."""
    if os.path.splitext(text)[1] in (".binaryproto", ".npy"):
        return load_mean(text)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = None
    if values is None or not all(np.isfinite(values)):
        raise InputError(f"--mean {text}: expected a .binaryproto/.npy file or finite numbers like 104,117,123")
    return values


def make_transformer(net, prep: Preprocessing) -> Transformer:
    name = net.inputs[0]
    shape = net.blobs[name].data.shape
    transformer = Transformer({name: shape})
    transformer.set_transpose(name, (2, 0, 1))
    if shape[1] == 3 and prep.channel_order == "BGR":
        transformer.set_channel_swap(name, (2, 1, 0))
    transformer.set_raw_scale(name, prep.raw_scale)
    if prep.mean is not None:
        transformer.set_mean(name, parse_mean(prep.mean) if isinstance(prep.mean, str) else prep.mean)
    if prep.input_scale is not None:
        transformer.set_input_scale(name, prep.input_scale)
    return transformer


def image_input(net) -> tuple:
    """(name, channels) of the net's image input; a clear error for a net that does not take images."""
    if not net.outputs:
        raise InputError(f"{os.path.basename(net.net_file)}: no layer after the input: nothing to classify with")
    name = net.inputs[0]
    shape = net.blobs[name].data.shape
    if len(net.inputs) != 1 or len(shape) != 4 or shape[1] not in (1, 3):
        raise InputError(f"{os.path.basename(net.net_file)}: classify feeds one image input (N x 1 or 3 x H x W); "
                         f"this net's inputs are {', '.join(f'{n} {list(net.blobs[n].data.shape)}' for n in net.inputs)}")
    return name, shape[1]


def read_labels(path, info) -> list:
    if path:
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such labels file" if not os.path.exists(path)
                             else f"{path}: not a regular file (a labels file has one label per line)")
        try:
            with open(path, encoding="utf-8") as handle:
                return [line.strip() for line in handle if line.strip()]
        except UnicodeDecodeError:
            raise InputError(f"{path}: not a text file (UTF-8, one label per line)") from None
        except OSError as error:
            raise InputError(f"{path}: cannot read the labels file: {error.strerror or error}") from None
    labels = info.get("labels")
    if labels == "cifar10":
        return CIFAR10_LABELS
    return labels if isinstance(labels, list) else None


def calibration_input(spec: str, net, transformer):
    """A statistics JSON file as it is, or the images `spec` names as one preprocessed array."""
    if spec.endswith(".json"):
        if not os.path.isfile(spec):
            raise InputError(f"--calibration {spec}: no such statistics file" if not os.path.exists(spec) else
                             f"--calibration {spec}: not a regular file")
        return spec
    paths, problems = list_images(spec.split(","))
    if problems or not paths:
        raise InputError(f"--calibration: {problems[0][1] if problems else spec + ': no images'}")
    name, channels = image_input(net)
    log.info("calibrating on %d image(s) ...", len(paths))
    return np.stack([transformer.preprocess(name, load_image(path, color=channels == 3)) for path in paths])


# --------------------------------------------------------------------------------------------- running

@dataclass
class Result:
    """One image's answer (or why it has none), as one JSON line."""
    path: str
    indices: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    probabilities: list = field(default_factory=list)
    error: str = None

    def as_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "indices": self.indices, "labels": self.labels, "probabilities": self.probabilities}


@dataclass
class Classifier:
    """A net ready to classify batches of image files (what each worker of a distributed run builds once).
    The net runs at a fixed batch size (a short or partly unreadable batch is padded with zeros), so that
    an OpenCL design is built once."""
    net: object
    transformer: Transformer
    labels: list
    top: int
    batch: int

    def __post_init__(self):
        self.input, self.channels = image_input(self.net)
        self.shape = (self.batch,) + tuple(self.net.blobs[self.input].data.shape[1:])

    def classify(self, paths) -> list:
        """Results for up to `batch` paths, in their order."""
        results, images = [], []
        for path in paths:
            try:
                images.append(self.transformer.preprocess(self.input, load_image(path, color=self.channels == 3)))
                results.append(Result(path))
            except InputError as error:
                results.append(Result(path, error=str(error)))
        if images:
            feed = np.zeros(self.shape, dtype=np.float32)
            feed[:len(images)] = images
            scores = self.net.forward(**{self.input: feed})[self.net.outputs[-1]].reshape(self.batch, -1)
            for result, row in zip((result for result in results if result.error is None), scores):
                best = np.argsort(row, kind="stable")[::-1][:self.top]
                result.indices = [int(i) for i in best]
                result.labels = [self.labels[i] if self.labels and i < len(self.labels) else f"class {i}"
                                 for i in best]
                result.probabilities = [float(row[i]) for i in best]
        return results


def classify_files(classifier: Classifier, paths):
    """Yield a list of Results per batch of `paths`, in order."""
    for start in range(0, len(paths), classifier.batch):
        yield classifier.classify(paths[start:start + classifier.batch])


def finished_paths(out_path: str) -> set:
    """Paths already recorded in a results file (answered or failed). A last line cut short by a killed
    run is removed, so that appending goes on from whole lines."""
    if not os.path.exists(out_path):
        return set()
    if not os.path.isfile(out_path):
        raise InputError(f"{out_path}: not a regular file (--out appends JSON lines to a file)")
    with open(out_path, "rb") as handle:
        content = handle.read()
    whole = content[:content.rfind(b"\n") + 1]
    if len(whole) != len(content):
        log.info("%s: removing a last line cut short by an interrupted run", out_path)
        with open(out_path, "r+b") as handle:
            handle.truncate(len(whole))
    done = set()
    for number, line in enumerate(whole.decode("utf-8", "replace").splitlines(), 1):
        try:
            record = json.loads(line)
            done.add(record["path"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{out_path}:{number}: not a result line of cnnfpga classify; refusing to append "
                             f"to this file (choose another --out)") from None
    return done


class Progress:
    """A tqdm bar on a terminal; otherwise a line every 10 seconds (for logs of long runs)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.failed = total, 0, 0
        self.start = self.last_line = time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="img", file=sys.stderr)
            except ImportError:
                pass
        self.lines = enabled and self.bar is None

    def update(self, images: int, failed: int) -> None:
        self.done += images
        self.failed += failed
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(images)
            if failed:
                self.bar.set_postfix(failed=self.failed)
        elif self.lines and now - self.last_line >= 10:
            self.last_line = now
            log.info("%d/%d images, %.1f images/s, %d failed", self.done, self.total,
                     self.done / (now - self.start), self.failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def print_result(result: Result, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.as_dict()), flush=True)
    elif result.error is None:
        print(f"{result.path}:")
        for probability, label in zip(result.probabilities, result.labels):
            print(f"  {probability:.4f}  {label}")


def load_net(args, net_path: str, calibration=None):
    weights = args.weights or bundled.bundled_weights(net_path)
    options = {"device": args.device, "precision": args.precision, "variant": args.variant,
               "calibration": calibration, "design": args.design}
    return Net(net_path, weights, backend=args.backend,
               **{key: value for key, value in options.items() if value is not None})


def prepare(args) -> Classifier:
    """The net, its preprocessing and labels from the command's options, built and checked."""
    net_path = bundled.resolve(args.net)
    info = bundled.net_info(net_path)
    labels = read_labels(args.labels, info)
    net = load_net(args, net_path)
    name, channels = image_input(net)
    prep = preprocessing(args, info, os.path.basename(net_path))
    transformer = make_transformer(net, prep)
    log.info("%s", prep.describe(channels))
    if args.calibration:   # the images need the net's input shape and preprocessing: a second load
        net = load_net(args, net_path, calibration_input(args.calibration, net, transformer))
    outputs = int(np.prod(net.blobs[net.outputs[-1]].data.shape[1:]))
    if labels is not None and len(labels) < outputs:
        raise InputError(f"{args.labels or 'the labels'}: names {len(labels)} classes, the net scores {outputs}")
    if labels is None and info.get("labels") == "imagenet":
        print("note: pass --labels synset_words.txt to print ImageNet class names", file=sys.stderr)
    net.blobs[name].reshape(*((args.batch,) + net.blobs[name].data.shape[1:]))
    net.reshape()
    if net.backend == "opencl":   # build the program and run it once, so that the reported times are warm:
        start = time.perf_counter()   # PoCL finishes compiling kernels at their first launch (seconds)
        net.forward(**{name: np.zeros(net.blobs[name].data.shape, np.float32)})
        log.info("first run (the device finishes building its kernels): %.2f s", time.perf_counter() - start)
    return Classifier(net, transformer, labels, args.top, args.batch)


def image_paths(args) -> tuple:
    """(paths to classify, problems): the specs' images not yet in the --out file; problems are printed."""
    paths, problems = list_images(args.images)
    if not paths:   # every spec named nothing: the last one's problem is the run's error
        problems = problems or [(None, f"no images to classify ({', '.join(IMAGE_EXTENSIONS)})")]
        for _, message in problems[:-1]:
            print(f"error: {message}", file=sys.stderr)
        raise InputError(problems[-1][1])
    for _, message in problems:
        print(f"error: {message}", file=sys.stderr)
    done = finished_paths(args.out) if args.out else set()
    todo = [path for path in paths if path not in done]
    if done:
        log.info("%s: %d of %d image(s) already done, %d to go", args.out, len(paths) - len(todo), len(paths), len(todo))
    return todo, problems


def classify(args, client=None) -> int:
    """The command: every image once through the net, on this process or spread over a Dask cluster
    (`client`, or --scheduler ADDRESS)."""
    todo, problems = image_paths(args)
    args.batch = max(1, min(args.batch, len(todo)))   # a few images: no padding to a batch of zeros
    if client is None and getattr(args, "scheduler", None):
        from .cluster import connect
        with connect(args.scheduler) as client:
            return classify_images(args, todo, problems, client)
    return classify_images(args, todo, problems, client)


def classify_images(args, todo: list, problems: list, client) -> int:
    if client is None:
        batches = classify_files(prepare(args), todo)
    else:
        from .cluster import cluster_batches
        batches = cluster_batches(client, args, todo)
    out = open(args.out, "a", encoding="utf-8") if args.out else None
    progress = Progress(len(todo), not args.no_progress)
    failed, first_batch_seconds, start = len(problems), None, time.perf_counter()
    try:
        for results in batches:
            first_batch_seconds = first_batch_seconds or time.perf_counter() - start
            errors = [result for result in results if result.error is not None]
            for result in errors:
                print(f"error: {result.error}", file=sys.stderr)
            for result in results if not args.quiet else ():
                print_result(result, args.json)
            if out is not None:   # whole lines, flushed per batch: a killed run loses at most this batch
                out.write("".join(json.dumps(result.as_dict()) + "\n" for result in results))
                out.flush()
                os.fsync(out.fileno())
            failed += len(errors)
            progress.update(len(results), len(errors))
    finally:
        progress.close()
        if out is not None:
            out.close()
    report_speed(len(todo), failed - len(problems), time.perf_counter() - start, first_batch_seconds, args,
                 os.path.basename(args.net))
    return 1 if failed else 0


def classify_dataset(images, net, out=None, client=None, **options) -> int:
    """The Python function behind `cnnfpga classify`: `options` are the command's long options with
    underscores (batch=50, backend="opencl", top=1, ...); `client` a dask.distributed.Client. With `out`
    nothing is printed per image (quiet=False to print). Returns the command's exit status."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([*map(os.fspath, images), "--net", os.fspath(net)])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise InputError(f"classify_dataset: unknown option(s) {', '.join(unknown)}")
    vars(args).update({"no_progress": True, "quiet": out is not None, **options, "out": out and os.fspath(out)})
    return classify(args, client)


def report_speed(images: int, failed: int, seconds: float, first_batch_seconds, args, net_name: str) -> None:
    """Images/s over the whole run, and without the first batch (it pays OpenCL's first launches)."""
    summary = f"{images - failed} image(s) classified"
    summary += f", {failed} could not be read" if failed else ""
    summary += f" through {net_name} ({args.backend}) in {seconds:.2f} s"
    if images > args.batch and first_batch_seconds is not None:
        steady = (images - args.batch) / max(seconds - first_batch_seconds, 1e-9)
        summary += f"; {steady:.1f} images/s after the first batch ({first_batch_seconds * 1000:.0f} ms)"
    elif images:
        summary += f" ({seconds * 1000 / images:.1f} ms per image)"
    print(summary, file=sys.stderr)


run = classify


def main(argv=None) -> int:
    return module_main(sys.modules[__name__], "python -m cnnfpga.classify", argv)


if __name__ == "__main__":
    sys.exit(main())
