"""Images/s of a net on the backends, side by side with OpenCV dnn in one run, as ratios to OpenCV.

    cnnfpga bench --net alexnet.prototxt [--weights W.caffemodel] [--batch 1 16]
                  [--backend reference opencl] [--variant fast fpga] [--precision float] [--device pocl]
                  [--seconds 3] [--rounds 5] [--patience 10] [--json]

Every configuration -- the golden model (reference), each OpenCL variant run by forward() and streamed
(forward_stream: batch k's host inner products overlap batch k+1's device stages), and OpenCV dnn on the
CPU when cv2 is installed -- runs the same net, weights and inputs.  Without --weights every side gets
the prototxt's seeded filler weights (OpenCV reads them from a caffemodel written into a temporary
folder, removed as soon as OpenCV has read it).  The machine may be shared, so the configurations take
turns in --rounds rounds of at least --seconds each, each run after waiting (up to --patience s) for
other processes to leave the CPUs idle, and the best round counts; compare the ratios, not the times.

Rates are warm: building the OpenCL program ("build s": a compile, or a load from the program cache)
and the first run at a batch size ("first run s": PoCL compiles its kernels for a size on first use)
are reported apart.  Each OpenCL variant also gets its device time per stage (OpenCL events, keyed by
the stage's first layer; a fused ReLU counts with its convolution) and its host inner products' times,
each the fastest of --rounds forward() calls.  PyTorch is not measured: it would need the Caffe graph
rebuilt as a torch model.
"""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
import sys
import tempfile
import textwrap
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from . import cli
from .bundled import resolve
from .cli import finite_float, positive_int
from .codegen import VARIANTS
from .errors import InputError
from .net import BACKENDS, Net

log = logging.getLogger("cnnfpga")
DEFAULT_VARIANT = "fast"   # the CPU/GPU kernels; "fpga" (the aoc design) is a correctness tool on a CPU
SHOWN_STAGES = 12          # a table lists at most this many device stages, the slowest


# -- the machine's load: the machine may be shared -----------------------------------------------------

def cpu_times() -> tuple:
    """(all, idle + iowait, this process's) CPU time in clock ticks: the machine's from /proc/stat, ours
    (every thread) from os.times()."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    own = os.times()
    return sum(values), values[3] + values[4], (own.user + own.system) * os.sysconf("SC_CLK_TCK")


def others_busy(interval: float = 0.25) -> float:
    """Share of the CPUs that other processes used during `interval`, 0 where /proc/stat cannot be read.
    We sleep meanwhile, but our worker threads (OpenCV's, PoCL's) may still spin: their time is left out."""
    try:
        total0, idle0, own0 = cpu_times()
        time.sleep(interval)
        total1, idle1, own1 = cpu_times()
    except OSError:
        return 0.0
    elapsed = max(1, total1 - total0)
    return max(0.0, (elapsed - (idle1 - idle0) - (own1 - own0)) / elapsed)


def wait_until_quiet(patience: float, limit: float = 0.05) -> float:
    """Wait until other processes use under `limit` of the CPUs (at most `patience` s); their share."""
    deadline = time.time() + patience
    busy = others_busy()
    while busy >= limit and time.time() < deadline:
        busy = others_busy()
    return busy


# -- rates ---------------------------------------------------------------------------------------------

def rate_of_steps(step, images_per_step: int, seconds: float) -> float:
    """Images/second of calling step() repeatedly for at least `seconds` (at least once)."""
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count * images_per_step / elapsed


def rate_of_stream(executor, inputs: dict, batch: int, seconds: float) -> float:
    """Images/second of executor.forward_stream fed for `seconds`, filling and draining the pipeline included."""
    start = time.perf_counter()

    def arrivals():
        yield inputs
        while time.perf_counter() - start < seconds:
            yield inputs

    count = sum(1 for _ in executor.forward_stream(arrivals()))
    return count * batch / (time.perf_counter() - start)


def settle_stream(executor, inputs: dict) -> None:
    """Run a stream long enough that it has timed the device and the host layers at this batch size
    and chosen how they share the cores (DeviceNet.forward_stream), so that no round pays for it."""
    from .runtime.executor import TIMED_BATCHES, WARM_UP_BATCHES
    for _ in executor.forward_stream([inputs] * (WARM_UP_BATCHES + TIMED_BATCHES + 1)):
        pass


def take_turns(runs: dict, rounds: int, seconds: float, patience: float) -> tuple:
    """{label: run(seconds) -> images/s}, each run once to warm up (first-touch allocations, OpenCV's
    set-up, PoCL's kernels), then `rounds` rounds in which they take turns, each after waiting for
    quiet CPUs.  ({label: [images/s of each round]}, [other processes' CPU share before each run])."""
    for run in runs.values():
        run(0.0)
    rates, others = {label: [] for label in runs}, []
    for _ in range(rounds):
        for label, run in runs.items():
            others.append(wait_until_quiet(patience))
            rates[label].append(run(seconds))
    return rates, others


# -- what the OpenCL path spends its time on -----------------------------------------------------------

@dataclass
class Profile:
    """Fastest seconds of each device stage (OpenCL events) and each host inner product."""
    stage_s: dict
    host_s: dict
    live_fraction: dict   # inner product -> share of its input columns non-zero (activation pruning)


def device_profile(executor, inputs: dict, runs: int) -> Profile:
    """Each stage's and each inner product's fastest time over `runs` executor.forward() calls."""
    from .host.inner_product import InnerProductStats
    stage_s = dict.fromkeys(executor.stage_seconds, math.inf)
    host_s = dict.fromkeys(executor.inner_products, math.inf)
    for _ in range(runs):
        executor.stage_seconds = dict.fromkeys(executor.stage_seconds, 0.0)   # they add up over calls
        for product in executor.inner_products.values():
            product.stats = InnerProductStats()
        executor.forward(inputs)
        stage_s = {name: min(best, executor.stage_seconds[name]) for name, best in stage_s.items()}
        host_s = {name: min(best, executor.inner_products[name].stats.seconds) for name, best in host_s.items()}
    live = {name: product.stats.live_fraction for name, product in executor.inner_products.items()}
    return Profile(stage_s, host_s, live)


# -- OpenCV --------------------------------------------------------------------------------------------

def opencv_module():
    """cv2, or None where OpenCV is not installed (it is optional: a test dependency, not a runtime one)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def opencv_net(prototxt: str, weights: str):
    import cv2
    net = cv2.dnn.readNetFromCaffe(prototxt, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def write_weights(graph, path) -> None:
    """The graph's weights (filler weights where it was loaded without any) as a caffemodel."""
    from .caffe.writer import write_caffemodel
    write_caffemodel(path, graph.name, [(layer.name, layer.type, layer.blobs) for layer in graph.layers if layer.blobs])


def opencv_nets(prototxt: str, weights, graph, count: int = 1) -> list:
    """`count` OpenCV dnn nets of the prototxt with the caffemodel `weights`, or, with weights None, with
    the graph's weights written into a temporary folder that is removed once OpenCV has read them (an
    AlexNet's is 244 MB)."""
    if weights is not None:
        return [opencv_net(prototxt, weights) for _ in range(count)]
    with tempfile.TemporaryDirectory(prefix="cnnfpga_bench_") as folder:
        path = os.path.join(folder, "filler_weights.caffemodel")
        write_weights(graph, path)
        return [opencv_net(prototxt, path) for _ in range(count)]


def opencv_forward(net, inputs: dict) -> np.ndarray:
    for name, x in inputs.items():
        net.setInput(x, name)
    return net.forward()


# -- the bench command ---------------------------------------------------------------------------------

@dataclass
class Measured:
    """One configuration at one batch size: a row of the table, an object of the JSON."""
    batch: int
    configuration: str
    backend: str                    # "reference", "opencl" or "opencv"
    variant: str = None             # OpenCL: "fast" or "fpga"
    mode: str = "forward"           # "forward" or "stream" (forward_stream)
    rounds: list = field(default_factory=list)   # images/s of each round
    images_per_s: float = None      # the best round
    ms_per_image: float = None
    vs_opencv: float = None         # images/s over OpenCV's at this batch size (higher: faster)
    build_s: float = None           # building the OpenCL program, not in the rates
    first_run_s: float = None       # the first run at this batch size, not in the rates
    diff_vs_opencv: float = None    # max |ours - OpenCV's| / max |OpenCV's|, the last output of the first run
    stage_ms: dict = None           # OpenCL: device time per stage, fastest of --rounds forward() calls
    host_ms: dict = None            # OpenCL: time per host inner product, likewise
    live_fraction: dict = None      # OpenCL: per inner product, input columns non-zero (activation pruning)


@dataclass
class Report:
    """What one bench run measured, and on what."""
    net: str
    weights: str                    # None: the prototxt's seeded filler weights
    precision: str
    device: str                     # the OpenCL device (None without the opencl backend)
    opencv: str                     # cv2's version; None: not measured (see notes)
    cpus: int
    seconds: float
    rounds: int
    load_average: list              # 1-minute load average before and after
    others_cpu_share: dict          # other processes' CPU share just before each run: median, max
    results: list
    notes: list


def add_arguments(parser) -> None:
    parser.add_argument("--net", required=True, help="prototxt path, or a bundled net's name (alexnet.prototxt)")
    parser.add_argument("--weights", help="caffemodel (default: the prototxt's seeded filler weights)")
    parser.add_argument("--batch", type=positive_int, nargs="+", default=[1], help="batch sizes (default 1)")
    parser.add_argument("--backend", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="backends to measure (default both)")
    parser.add_argument("--variant", nargs="+", choices=VARIANTS,
                        help=f"OpenCL kernel variants (default {DEFAULT_VARIANT})")
    parser.add_argument("--precision", help="OpenCL precision: float, half, fixed16, ..., a JSON mapping or file")
    parser.add_argument("--device", help="OpenCL platform/device name or P:D index (or set CNNFPGA_DEVICE)")
    parser.add_argument("--seconds", type=finite_float, default=3.0, help="measuring time per configuration and round")
    parser.add_argument("--rounds", type=positive_int, default=5, help="rounds per configuration; the best counts")
    parser.add_argument("--patience", type=finite_float, default=10.0,
                        help="longest wait for idle CPUs before each run, seconds")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def check_arguments(args) -> None:
    """Refuse what argparse cannot, before anything is loaded or written."""
    for name in ("seconds", "patience"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name} {getattr(args, name):g}: expected seconds >= 0")
    given = [f"--{name}" for name in ("variant", "precision", "device") if getattr(args, name) is not None]
    if given and "opencl" not in args.backend:
        raise InputError(f"{', '.join(given)}: only for --backend opencl (the golden model is float32 on the CPU)")


@dataclass
class Ours:
    """One of our nets to measure: the golden model, or the OpenCL path in one variant."""
    label: str
    variant: str    # None for the golden model
    net: Net


def our_nets(args, net_path: str, weights) -> list:
    """[Ours]: the golden model and one OpenCL Net per variant, as asked."""
    options = {key: value for key, value in (("precision", args.precision), ("device", args.device)) if value}
    precision = args.precision or "float"
    nets = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no weights given", category=UserWarning)   # noted once instead
        if "reference" in args.backend:
            nets.append(Ours("reference", None, Net(net_path, weights)))
        if "opencl" in args.backend:
            nets += [Ours(f"opencl {variant} {precision}", variant,
                          Net(net_path, weights, backend="opencl", variant=variant, **options))
                     for variant in args.variant or [DEFAULT_VARIANT]]
    return nets


def random_inputs(net, batch: int) -> dict:
    """Pixel-like values (uniform in [-100, 100], seeded by the batch size) for every input of the net."""
    rng = np.random.default_rng(batch)
    return {name: rng.uniform(-100, 100, (batch,) + tuple(shape[1:])).astype(np.float32)
            for name, shape in net.graph.inputs.items()}


def first_run(net, inputs: dict) -> tuple:
    """Reshape the net to the inputs, build its OpenCL program and run it once: (build seconds, None
    for the golden model; first run seconds; the net's last output)."""
    for name, x in inputs.items():
        net.blobs[name].reshape(*x.shape)
    net.reshape()
    build_s = None
    if net.backend == "opencl":
        start = time.perf_counter()
        net.executor   # noqa: B018  (builds the program)
        build_s = time.perf_counter() - start
    start = time.perf_counter()
    output = net.forward(**inputs)[net.outputs[-1]]
    return build_s, time.perf_counter() - start, output


def relative_difference(ours: np.ndarray, theirs) -> float:
    """max |ours - OpenCV's| / max |OpenCV's| of an output; None without OpenCV's."""
    if theirs is None or ours.size != theirs.size:
        return None
    return float(np.abs(ours - theirs.reshape(ours.shape)).max() / max(np.abs(theirs).max(), np.finfo(np.float32).tiny))


def opencv_side(net_path: str, weights, graph, notes: list):
    """(OpenCV dnn net, its label), or None, with a note saying why, where cv2 is not installed or
    cannot read the net."""
    cv2 = opencv_module()
    if cv2 is None:
        note(notes, "OpenCV (cv2) is not installed: no OpenCV column (pip install opencv-python-headless)")
        return None
    try:
        net = opencv_nets(net_path, weights, graph)[0]
    except cv2.error as error:
        note(notes, f"OpenCV cannot read {os.path.basename(net_path)}: {str(error).strip().splitlines()[-1]}")
        return None
    return net, f"OpenCV dnn ({cv2.getNumThreads()} threads)"


def note(notes: list, text: str) -> None:
    log.info("%s", text)
    notes.append(text)


def opencv_row(opencv, batch: int, inputs: dict, notes: list) -> tuple:
    """OpenCV's row, its run(seconds) and its output at this batch size; (None, None, None) where it
    cannot run the net."""
    net, label = opencv
    start = time.perf_counter()
    try:
        output = opencv_forward(net, inputs)
    except opencv_module().error as error:
        note(notes, f"batch {batch}: OpenCV cannot run the net: {str(error).strip().splitlines()[-1]}")
        return None, None, None
    row = Measured(batch, label, "opencv", first_run_s=time.perf_counter() - start)
    return row, partial(rate_of_steps, partial(opencv_forward, net, inputs), batch), output


def our_rows(ours: Ours, batch: int, inputs: dict, theirs) -> list:
    """[(row, run(seconds))] of one of our nets at this batch size: forward() first, then on OpenCL streamed."""
    net = ours.net
    build_s, first_s, output = first_run(net, inputs)
    forward = Measured(batch, ours.label if ours.variant is None else f"{ours.label}, forward()", net.backend,
                       ours.variant, build_s=build_s, first_run_s=first_s,
                       diff_vs_opencv=relative_difference(output, theirs))
    rows = [(forward, partial(rate_of_steps, partial(net.forward, **inputs), batch))]
    if ours.variant is not None:
        settle_stream(net.executor, inputs)
        streamed = Measured(batch, f"{ours.label}, streamed", net.backend, ours.variant, mode="stream")
        rows.append((streamed, partial(rate_of_stream, net.executor, inputs, batch)))
    return rows


def measure_batch(nets: list, opencv, batch: int, args, notes: list) -> tuple:
    """Every configuration at one batch size, taking turns: ([Measured], other processes' CPU shares)."""
    inputs = random_inputs(nets[0].net, batch)
    measured, theirs, profiled = [], None, []
    if opencv is not None:
        row, run, theirs = opencv_row(opencv, batch, inputs, notes)
        measured += [(row, run)] if row is not None else []
    for ours in nets:
        rows = our_rows(ours, batch, inputs, theirs)
        measured += rows
        profiled += [(rows[0][0], ours.net)] if ours.variant is not None else []
    log.info("batch %d: %d configurations take turns, %d round(s) of >= %g s each", batch, len(measured),
             args.rounds, args.seconds)
    rates, others = take_turns({row.configuration: run for row, run in measured}, args.rounds, args.seconds,
                               args.patience)
    rows = [row for row, _ in measured]
    for row in rows:
        row.rounds = rates[row.configuration]
        row.images_per_s = max(row.rounds)
        row.ms_per_image = 1e3 / row.images_per_s
    opencv_rate = next((row.images_per_s for row in rows if row.backend == "opencv"), None)
    for row in rows:
        row.vs_opencv = row.images_per_s / opencv_rate if opencv_rate else None
    for row, net in profiled:
        add_profile(row, net, inputs, args.rounds)
    return rows, others


def add_profile(row: Measured, net, inputs: dict, runs: int) -> None:
    profile = device_profile(net.executor, inputs, runs)
    row.stage_ms = {name: seconds * 1e3 for name, seconds in profile.stage_s.items()}
    row.host_ms = {name: seconds * 1e3 for name, seconds in profile.host_s.items()}
    row.live_fraction = profile.live_fraction


def bench(args) -> Report:
    check_arguments(args)
    net_path = resolve(args.net)
    weights = resolve(args.weights) if args.weights else None
    notes = []
    if weights is None:
        note(notes, f"{os.path.basename(net_path)}: no --weights, so every side runs the prototxt's seeded filler "
                    f"weights (timings do not depend on the values, except through activation pruning)")
    nets = our_nets(args, net_path, weights)
    opencv = opencv_side(net_path, weights, nets[0].net.graph, notes)
    load_before = os.getloadavg()[0]
    results, others = [], []
    for batch in args.batch:
        rows, shares = measure_batch(nets, opencv, batch, args, notes)
        results += rows
        others += shares
    devices = [ours.net.executor.device.name.strip() for ours in nets if ours.variant is not None]
    return Report(net=os.path.basename(net_path), weights=weights, precision=args.precision or "float",
                  device=devices[0] if devices else None,
                  opencv=opencv_module().__version__ if opencv is not None else None, cpus=os.cpu_count(),
                  seconds=args.seconds, rounds=args.rounds, load_average=[load_before, os.getloadavg()[0]],
                  others_cpu_share={"median": statistics.median(others), "max": max(others)},
                  results=results, notes=notes)


def number(value, form: str) -> str:
    return "-" if value is None else format(value, form)


def table(report: Report) -> str:
    """The report as text: a table per batch size, then each OpenCL variant's stage and host times."""
    lines = [f"{report.net}, {'weights ' + report.weights if report.weights else 'seeded filler weights'}; "
             f"{report.cpus} CPUs" + (f"; OpenCL device {report.device}" if report.device else "") +
             (f"; OpenCV {report.opencv}" if report.opencv else ""),
             f"images/s: best of {report.rounds} round(s) of >= {report.seconds:g} s, configurations taking turns; "
             f"x OpenCV: images/s over OpenCV's (higher is faster); diff: max |ours - OpenCV's| / max |OpenCV's|",
             f"load average before {report.load_average[0]:.2f}, after {report.load_average[1]:.2f}; other "
             f"processes' CPU share before a run: median {report.others_cpu_share['median']:.0%}, max "
             f"{report.others_cpu_share['max']:.0%}"]
    width = max(len("configuration"), *(len(row.configuration) for row in report.results))
    for batch in dict.fromkeys(row.batch for row in report.results):
        rows = [row for row in report.results if row.batch == batch]
        lines += ["", f"batch {batch}",
                  f"  {'configuration':{width}s} {'images/s':>9s} {'ms/image':>9s} {'x OpenCV':>9s} {'build s':>8s} "
                  f"{'first run s':>12s} {'diff vs OpenCV':>15s}"]
        lines += [f"  {row.configuration:{width}s} {row.images_per_s:9.2f} {row.ms_per_image:9.2f} "
                  f"{number(row.vs_opencv, '8.2f') + ('x' if row.vs_opencv else ''):>9s} {number(row.build_s, '8.2f'):>8s} "
                  f"{number(row.first_run_s, '12.3f'):>12s} {number(row.diff_vs_opencv, '15.1e'):>15s}"
                  for row in rows]
        for row in rows:
            lines += profile_lines(row, report.rounds)
    return "\n".join(lines + [f"note: {text}" for text in report.notes])


def profile_lines(row: Measured, runs: int) -> list:
    """An OpenCL row's device stages (the slowest SHOWN_STAGES of a long net; the JSON has them all) and
    host inner products, wrapped."""
    if row.stage_ms is None:
        return []
    slowest = sorted(row.stage_ms.items(), key=lambda item: -item[1])
    shown = row.stage_ms.items() if len(slowest) <= SHOWN_STAGES else slowest[:SHOWN_STAGES]
    stages = ", ".join(f"{name} {ms:.2f}" for name, ms in shown)
    if len(shown) < len(slowest):
        stages = f"slowest first: {stages}, {len(slowest) - len(shown)} more {sum(ms for _, ms in slowest[len(shown):]):.2f}"
    text = (f"{row.configuration}: device stages, ms (OpenCL events, fastest of {runs} forward() calls; sum "
            f"{sum(row.stage_ms.values()):.2f}): {stages}")
    if row.host_ms:
        text += (f"; host inner products, ms (sum {sum(row.host_ms.values()):.2f}): "
                 + ", ".join(f"{name} {ms:.2f} ({row.live_fraction[name]:.0%} live)" for name, ms in row.host_ms.items()))
    return textwrap.wrap(text, 116, initial_indent="  ", subsequent_indent="      ")


def run(args) -> int:
    report = bench(args)
    print(json.dumps(asdict(report), indent=2) if args.json else table(report))
    return 0


def main(argv=None) -> int:
    return cli.module_main(sys.modules[__name__], "python -m cnnfpga.bench", argv)


if __name__ == "__main__":
    sys.exit(main())
