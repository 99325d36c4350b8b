"""DeviceNet: runs a Plan as a Design sizes it -- device segments through OpenCL, host layers on the CPU."""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import pyopencl as cl

from cnnfpga.host.inner_product import InnerProduct, blas_threads
from cnnfpga.host.softmax import softmax

from .. import codegen, fast
from ..design import default_design, kind
from ..design.stage import padded
from ..errors import DeviceError
from ..layers import REGISTRY
from ..placement import HostStep, Segment, as_4d, filter_pass, place
from ..precision import Fixed, Float, Half, calibration_statistics, dequantize, quantize, storage_dtype
from ..reference import check_inputs
from .device import build_program, host_cores_but_one, is_emulator, is_fpga, select_device

# Device and host layers time-sharing all cores of the CPU run at about this fraction of their speeds
# alone (kernels wait for a descheduled work-group, the inner products' stream evicts the conv
# weights): measured 0.74 for AlexNet at batch 1, 0.9 at batch 16, on 2 cores.  forward_stream
# weighs it against giving the device all cores but one (see DeviceNet.split_cores_pays).
SHARED_CORES_EFFICIENCY = 0.75
WARM_UP_BATCHES, TIMED_BATCHES = 2, 3   # run alone by a stream before it decides how to share the cores
                                        # (PoCL's first runs of a size are up to twice as slow)
STALL_SECONDS = 60.0    # per image: an FPGA segment none of whose stages finishes for this long has stalled
# Intel's emulator runs a board's milliseconds in minutes where stages wait on narrow streams (a balanced
# AlexNet: 540 s for one image on 2 cores), and a stage finishes only at the end of the batch
EMULATOR_STALL_SECONDS = 1200.0
POLL_SECONDS = 0.02


def to_stream(x: np.ndarray, fmt, width: int) -> tuple:
    """(N, C, H, W) float32 -> (the stream layout (N, H, W, C padded to whole words of `width`) in
    the storage of `fmt`, values that saturated).  The host converts into the first stage's input
    format as the golden model does: fp16 rounds to nearest even (as vstore_half_rte; a finite value
    that becomes infinite counts), fixed point through quantize."""
    n, c, h, w = x.shape
    out = np.zeros((n, h, w, padded(c, width)), storage_dtype(fmt))
    values = x.transpose(0, 2, 3, 1)
    saturated = 0
    if isinstance(fmt, Fixed):
        values, saturated = quantize(values, fmt)
    elif isinstance(fmt, Half):
        with np.errstate(over="ignore"):
            halves = np.asarray(values, np.float32).astype(np.float16)
        saturated = int(np.count_nonzero(np.isinf(halves) & np.isfinite(values)))
        values = halves.view(np.uint16)
    out[..., :c] = values
    return out, saturated


def from_stream(s: np.ndarray, channels: int, fmt) -> np.ndarray:
    """The stream layout back to (N, C, H, W) float32 (fixed point dequantised, exactly)."""
    values = s[..., :channels].transpose(0, 3, 1, 2)
    if isinstance(fmt, Fixed):
        values = dequantize(values, fmt)
    elif isinstance(fmt, Half):
        values = values.view(np.float16)
    return np.ascontiguousarray(values, dtype=np.float32)


HALF_UNIT_ROUNDOFF = 2.0 ** -11   # fp16 keeps 11 significant bits; round to nearest even


def half_error_bound(plan) -> float:
    """The documented error of a half-precision plan, as max |out - float ref| / max |float ref|.

    Half stores every value between stages in fp16 (vstore_half_rte: relative error <= 2^-11) and
    rounds the weights and biases to fp16 (<= 2^-11 of each product, so <= 2^-11 of sum |w x|);
    arithmetic is float32.  The segment input is rounded once.  To first order these relative
    errors add up along the net: at most (1 + 2 * half stages) * 2^-11.  This assumes the layers do
    not amplify relative error (ReLU, pooling and LRN do not; a convolution can where its outputs
    cancel, which random and trained weights rarely do at the scale of a blob's maximum).
    """
    stages = sum(isinstance(stage.precision.outputs, Half) for stage in plan.stages)
    return (1 + 2 * stages) * HALF_UNIT_ROUNDOFF


@dataclass
class SegmentRun:
    """A segment enqueued on a batch (DeviceNet.start_segment), for DeviceNet.finish_segment."""
    segment: Segment
    events: list          # (stage index, kernel event) for the stages' device times
    reads: list           # the events of the outputs' copies into `outs`
    outs: dict            # sink key -> the blob in the stream layout, once `reads` are complete: one per
                          # pass of a stage reloading its weights (each a share of the channels), else one
    sources: list         # the host arrays the input copies read: alive until the queue has run them
    n: int                # images


@dataclass
class OnDevice:
    """An input a segment takes where another segment's run wrote it, in device memory (_hands_over)."""
    run: SegmentRun
    key: str


def describe_line(program_code):
    """line -> what a line of `program_code`'s source belongs to (a stage), for build errors."""
    def describe(line: int):
        code = program_code.stage_at_line(line)
        if code is None:
            return None
        return f"stage {code.stage.index} '{code.stage.name}' at {code.stage.layer.where}"
    return describe


def partition_bitstreams(graph, bitstream, partitions: int) -> list:
    """One bitstream per partition of a partitioned design (None: build from source)."""
    if bitstream is None:
        return [None] * partitions
    if isinstance(bitstream, (str, os.PathLike)) or len(bitstream) != partitions:
        raise DeviceError(f"{graph.path}: the design has {partitions} partitions, one bitstream each; pass "
                          f"bitstream=[{', '.join(f'p{k + 1}.aocx' for k in range(partitions))}]")
    return list(bitstream)


@dataclass
class DevicePlace:
    """One OpenCL device and what lives on it: its context and queues, the segments' buffers, and the
    counters its kernels add to (per stage: values saturated, and with count_cycles loop iterations).
    A chain's partitions each have one; on one device everything shares one."""
    device: object
    fpga: bool
    context: object
    queue: object
    sub_device: object        # all cores but one of the host's CPU (for streams), or None
    sub_queue: object
    stats_buffer: object
    stage_queues: dict        # stage index -> its own queue (an FPGA platform runs a segment's stages at once)
    buffers: dict = field(default_factory=dict)
    layout_kernel: object = None   # the fast variant's input layout kernel
    relayout_kernel: object = None  # kernels/relayout.cl, built when a segment first needs it
    # held while a segment is enqueued (its copy in, kernels, copy out together): batches in flight on
    # several devices at once (DeviceNet.forward_stream) never interleave in its shared buffers
    lock: object = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, device, stages: int, sub_device: bool) -> "DevicePlace":
        sub = host_cores_but_one(device) if sub_device else None
        context = cl.Context([device] + ([sub] if sub is not None else []))
        profiling = cl.command_queue_properties.PROFILING_ENABLE
        stats = cl.Buffer(context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR,
                          hostbuf=np.zeros(2 * max(1, stages), np.uint64))
        fpga = is_fpga(device)
        return cls(device, fpga, context, cl.CommandQueue(context, device, properties=profiling), sub,
                   cl.CommandQueue(context, sub, properties=profiling) if sub is not None else None, stats,
                   {index: cl.CommandQueue(context, device, properties=profiling) for index in range(stages)}
                   if fpga else {})

    def build(self, source: str, describe, bitstream, label: str, count_cycles: bool, variant: str):
        # an FPGA platform runs the real channels, every stage of a segment at once on its own queue
        options = [] if self.fpga else ["-D", "CNNFPGA_EMULATE_CHANNELS"]
        if count_cycles:
            options += ["-D", "CNNFPGA_COUNT_CYCLES"]
        if variant == "fast":
            options.append("-cl-mad-enable")
        return build_program(self.context, self.devices, source, options, describe, bitstream, label)

    @property
    def devices(self) -> list:
        """The device and the sub-device of all its cores but one (streams): a program is built for both."""
        return [self.device] + ([self.sub_device] if self.sub_device is not None else [])

    def relayout(self):
        """The kernel that moves a blob between two word widths on the device (kernels/relayout.cl)."""
        if self.relayout_kernel is None:
            source = resources.files("cnnfpga.kernels").joinpath("relayout.cl").read_text()
            program = build_program(self.context, self.devices, source, [], label="the runtime's re-layout kernel")
            self.relayout_kernel = program.cnnfpga_relayout
        return self.relayout_kernel

    def stats(self) -> np.ndarray:
        counts = np.empty(self.stats_buffer.size // 8, np.uint64)
        cl.enqueue_copy(self.queue, counts, self.stats_buffer)
        return counts

    def reset(self) -> None:
        cl.enqueue_fill_buffer(self.queue, self.stats_buffer, np.uint64(0), 0, self.stats_buffer.size).wait()


class DeviceNet:
    """A Graph run the FPGA way: conv / pool / ReLU / LRN stages as OpenCL kernels, the rest on the host.

    graph:      a cnnfpga.graph.Graph (weights attached)
    precision:  a setting ("float", "half", "fixed16", "fixed8.4", {layer: form, "*": default}, a JSON
                path) or {layer name: LayerPrecision} already resolved (cnnfpga.precision.resolve_precision)
    device:     platform/device name substring or "P:D"; default $CNNFPGA_DEVICE, then a real FPGA board,
                then any device but the FPGA emulator; for a partitioned design also a list of them, one
                per partition, each partition's program on its own device (a board of a chain); the
                same device twice is two contexts, as two boards.  One device runs the partitions in turn
    calibration: for fixed formats with automatic fractional bits: input batches to run through the
                golden model, a {blob: max |x|} mapping, or a JSON file of those; None: defaults
    bitstream:  an aoc-built .aocx for an FPGA board (a board cannot compile source; Intel's FPGA
                emulator can, and builds the channel source itself); a list of them, one per partition,
                for a partitioned design
    prune_threshold: passed to the host inner products
    parallelism: {conv layer name: (ci, co[, f]) or {field: value}} overriding the default design
    design:     a cnnfpga.design.Design of this net (from the balancer or a design folder) instead of
                the default one; its plan is used as it is (precision and calibration must be None)
    variant:    "fpga" (every stage the single work-item kernel aoc would get) or "fast" (for CPUs and
                GPUs, not an FPGA design: float convolutions as register-tiled NDRange kernels, 3x3 and
                5x5 stride-1 ones as Winograd F(2x2, r x r); float pooling and LRN across channels one
                work-item per pixel; a segment's float input laid out on the device)
    count_cycles: build with -D CNNFPGA_COUNT_CYCLES: every stage counts its loop iterations
                (cycles(); for checking the cost model on a CPU, never in an aoc build)
    stall_seconds: on an FPGA platform, seconds per image after which a segment none of whose
                stages finishes is reported as stalled (default STALL_SECONDS on a board,
                EMULATOR_STALL_SECONDS on Intel's emulator)
    inject:     {stage index: source text} added to that stage's code (to test build errors and stalls)
    host_threads: threads an inner product is split over in forward() (default: one per CPU);
                forward_stream uses one, the device's threads have the other cores
    keep:       names of blobs to write to device memory and return from forward() even where they
                stream between the stages of a segment (placement.place); not with design=
    """

    def __init__(self, graph, precision="float", device=None, calibration=None, bitstream=None,
                 prune_threshold: float = 0.0, parallelism: dict = None, variant: str = "fpga",
                 inject: dict = None, host_threads: int = None, design=None, count_cycles: bool = False,
                 stall_seconds: float = None, keep=()):
        self.graph = graph
        self.host_threads = host_threads or os.cpu_count() or 1
        if design is not None:
            if calibration is not None or parallelism is not None or keep:
                raise DeviceError(f"{graph.path}: a design fixes precision, parallelism and what its segments "
                                  f"write; pass no calibration=, parallelism= or keep= with it")
            self.plan = design.plan
        else:
            stats = calibration_statistics(graph, calibration)
            self.plan = place(graph, precision, stats, keep=keep)
            narrow = fast.narrow_concats(self.plan) if variant == "fast" else {}
            if narrow:
                self.plan = place(graph, precision, stats, host_layers=narrow, keep=keep)
            design = default_design(self.plan, parallelism, variant)
        self.design = design
        selectors = list(device) if isinstance(device, (list, tuple)) else [device]
        partitions = len(design.partition_plans())
        if len(selectors) not in (1, partitions):
            raise DeviceError(f"{graph.path}: {len(selectors)} devices given for a design of {partitions} "
                              f"partition(s); give one device, or one per partition")
        # one place per device given (the same device named twice is two places, two contexts, as two
        # boards would be); on one device, the partitions take turns
        self.places = [DevicePlace.open(select_device(selector), len(self.plan.stages), len(selectors) == 1)
                       for selector in selectors]
        first = self.places[0]
        # the first device's: what the host-layer overlap of forward_stream works with
        self.device, self.queue, self.sub_device, self.sub_queue = first.device, first.queue, first.sub_device, \
            first.sub_queue
        self.stream_split_cores = {}   # batch size -> did forward_stream give the device all cores but one
        self.stream_timing = {}        # batch size -> (device, host-layer seconds) that decided it
        self.program_code = codegen.generate(self.plan, design, inject, variant)
        for where in self.places:
            name = where.device.name.strip()
            if where.fpga and variant != "fpga":
                raise DeviceError(f"{graph.path}: the '{variant}' variant is not an FPGA design; use variant='fpga' "
                                  f"on '{name}'")
            if where.fpga and not is_emulator(where.device) and bitstream is None:
                raise DeviceError(f"{graph.path}: '{name}' is an FPGA board; compile the generated source with aoc "
                                  "and pass bitstream=path.aocx")
        # a partitioned design is one program per partition (one bitstream each on a board), on its own
        # device or all on one in turn
        plans = design.partition_plans()
        codes = [self.program_code] if len(plans) == 1 else [codegen.generate(p, design, inject, variant)
                                                               for p in plans]
        bitstreams = [bitstream] if len(plans) == 1 else partition_bitstreams(graph, bitstream, len(plans))
        labels = (["the OpenCL program"] if len(codes) == 1 else
                  [f"OpenCL program {k} of {len(codes)} (partition {k})" for k in range(1, len(codes) + 1)])
        homes = self.places if len(self.places) == len(codes) else [first] * len(codes)
        self.programs = [home.build(code.source, describe_line(code), stream, label, count_cycles, variant)
                         for code, stream, label, home in zip(codes, bitstreams, labels, homes)]
        self.program = self.programs[0]
        self.kernels, self.winograd_kernels, self.place_of = {}, {}, {}
        for code, program, home in zip(codes, self.programs, homes):
            if variant == "fast" and home.layout_kernel is None:
                # fast variant: a float segment input goes to the device as it is and a kernel lays it out
                home.layout_kernel = program.cnnfpga_nchw_to_stream
            for stage_code in code.stages:
                index = stage_code.stage.index
                self.place_of[index] = home
                self.kernels[index] = getattr(program, stage_code.kernel)
                if stage_code.winograd:   # a Winograd stage's two kernels before its main one (the output transform)
                    self.winograd_kernels[index] = (getattr(program, stage_code.kernel + "_input"),
                                                    getattr(program, stage_code.kernel + "_gemm"))
        self.codes = {code.stage.index: code for code in self.program_code.stages}
        if stall_seconds is None:
            stall_seconds = EMULATOR_STALL_SECONDS if any(is_emulator(p.device) for p in self.places) else STALL_SECONDS
        self.stall_seconds = float(stall_seconds)
        # the host counts its own conversions (and weights saturated when quantised) per stage; the
        # kernels count on their device (DevicePlace.stats)
        self.host_saturation = {stage.index: 0 for stage in self.plan.stages}
        # per stage, the arguments of each pass (one but for a conv reloading its weights)
        self.stage_args = {stage.index: self._stage_args(stage) for stage in self.plan.stages}
        self.inner_products = {step.layer.name: InnerProduct.from_layer(step.layer, prune_threshold=prune_threshold)
                               for step in self.plan.steps
                               if isinstance(step, HostStep) and step.layer.type == "InnerProduct"
                               and step.layer.spec.axis == 1}
        last_segment = max((i for i, step in enumerate(self.plan.steps) if isinstance(step, Segment)), default=-1)
        self.head, self.tail = self.plan.steps[:last_segment + 1], self.plan.steps[last_segment + 1:]
        # device seconds per stage from OpenCL events, summed over runs; keyed like saturation() and
        # cycles() by the stage's name, its first layer's (a ReLU fused into a convolution adds to it)
        self.stage_seconds = {stage.name: 0.0 for stage in self.plan.stages}
        self.timing_lock = threading.Lock()   # chain_stream's threads add to stage_seconds

    def _stage_args(self, stage) -> list:
        """The kernel arguments after the two ports and before n_images, for each pass of the stage."""
        code, where = self.codes[stage.index], self.place_of[stage.index]
        flags = cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR
        passes = [filter_pass(stage, number) for number in range(stage.passes)] if stage.passes > 1 else [stage]
        if code.fast:
            return [self._fast_args(one_pass, code, where.context, flags) for one_pass in passes]
        sd = self.design.of(stage)
        scratch = []
        if not where.fpga:   # on-chip arrays, emulated in global memory (the passes take turns)
            scratch = [cl.Buffer(where.context, cl.mem_flags.READ_WRITE, max(1, a.count) * np.dtype(a.dtype).itemsize)
                       for a in kind(stage).onchip(stage, sd, self.design.schedule(stage))]
        args = []
        for one_pass in passes:
            arrays, saturated = kind(stage).arrays(one_pass, sd)
            self.host_saturation[stage.index] += saturated
            args.append([cl.Buffer(where.context, flags, hostbuf=np.ascontiguousarray(a)) for a in arrays] +
                        scratch + [where.stats_buffer])
        return args

    def _fast_args(self, stage, code, context, flags) -> list:
        if stage.kind != "conv":
            return []
        layout = fast.winograd_weight_layout if code.winograd else fast.fast_conv_weight_layout
        weights, bias = layout(stage)
        args = [cl.Buffer(context, flags, hostbuf=weights), cl.Buffer(context, flags, hostbuf=bias)]
        if not code.winograd:   # what the fast conv reads where its window covers padding
            zeros = np.zeros(fast.fast_zeros_length(stage), np.float32)
            args.append(cl.Buffer(context, flags, hostbuf=zeros))
        return args

    def _stats(self) -> np.ndarray:
        return sum(where.stats() for where in self.places)   # each stage counts on its own device only

    def saturation(self) -> dict:
        """{layer name: values saturated so far} for every device stage (fixed-point outputs; fp16
        stores that overflowed to infinity)."""
        counts = self._stats()
        return {stage.name: int(counts[2 * stage.index]) + self.host_saturation[stage.index]
                for stage in self.plan.stages}

    def cycles(self) -> dict:
        """{layer name: loop iterations counted so far} for every device stage (count_cycles=True)."""
        counts = self._stats()
        return {stage.name: int(counts[2 * stage.index + 1]) for stage in self.plan.stages}

    def reset_counters(self) -> None:
        for where in self.places:
            where.reset()
        self.host_saturation = {index: 0 for index in self.host_saturation}

    # -- running ------------------------------------------------------------------------------------
    def forward(self, inputs: dict) -> dict:
        """Run the net on a batch; returns every blob that was materialised, by Caffe name.

        Nothing overlaps here, so each inner product is split over host_threads host threads (which
        block when idle; BLAS's own threads spin after each call and slowed the device stages of the
        next forward twofold), with a one-thread BLAS each."""
        if self.sub_queue is not None:   # a suspended stream's batch in flight shares the buffers
            self.sub_queue.finish()
        with blas_threads(1):
            values = self._run(self.head, dict(check_inputs(self.graph, inputs)))
            return self._finish(self._run(self.tail, values, self.host_threads))

    def forward_stream(self, batches):
        """Run a sequence of input dicts, yielding each one's blobs in order.

        On several devices (a chain, device=[...]) every batch runs in a thread of its own, as many in
        flight as there are devices, so that while one device works on batch k the next works on
        batch k - 1 (chain_stream).  On one device: the host layers after
        the last device segment (the inner products) of batch k run in a thread while the device
        works on batch k+1; each batch still reaches every inner product in one GEMM.  Where the
        device part is one segment, batch k+1 is on the device's queue before batch k's output is
        read, so the device never waits for this thread to wake up.

        Batches of one image are the FPGA pipeline's case: each image is processed on its own, and
        the throughput comes from image k's inner products overlapping image k+1's device stages.
        The host layers get one thread and BLAS one thread (see blas_threads).  Where the device is
        the host's own CPU, the first batches of a size run alone, to time the device and the host
        layers (WARM_UP_BATCHES + TIMED_BATCHES, once per DeviceNet and size); the stream then either
        shares all cores between them or gives the device stages all cores but one (split_cores_pays);
        stream_split_cores[batch size] says which, stream_timing[batch size] from what times.
        """
        if len(self.places) > 1:
            yield from self.chain_stream(batches)
            return
        one_segment = len(self.head) == 1 and isinstance(self.head[0], Segment)
        with blas_threads(1), ThreadPoolExecutor(max_workers=1) as host:
            pending = ahead = None   # the host layers' future; (values, SegmentRun) queued on the device
            timed = {}               # batch size -> [(device, host seconds)] of this stream

            def hand_over(values):
                """Give a batch to the host layers (None: nothing more); the previous batch's blobs."""
                nonlocal pending
                done = [] if pending is None else [self._finish(pending.result())]
                pending = None if values is None else host.submit(self._run, self.tail, values, 1)
                return done

            def device_finished(started):
                values, run = started
                values.update(self.finish_segment(run))
                return values

            for inputs in batches:
                values = dict(check_inputs(self.graph, inputs))
                n = len(next(iter(values.values())))
                if self.sub_device is not None and n not in self.stream_split_cores:
                    if ahead is not None:   # a new size: what is in flight first, then this batch alone
                        yield from hand_over(device_finished(ahead))
                        ahead = None
                    yield from hand_over(None)
                    yield self._finish(self._timed_batch(values, timed.setdefault(n, [])))
                    continue
                queue = self.sub_queue if self.stream_split_cores.get(n) else self.queue
                if one_segment:
                    segment = self.head[0]
                    started = (values, self.start_segment(segment, self.segment_inputs(segment, lambda key, *_: values[key]),
                                                          queue))
                    if ahead is None:
                        ahead = started
                        continue
                    values, ahead = device_finished(ahead), started
                else:
                    values = self._run(self.head, values, queue=queue)
                yield from hand_over(values)
            if ahead is not None:
                yield from hand_over(device_finished(ahead))
            yield from hand_over(None)

    def chain_stream(self, batches):
        """forward_stream on several devices: each batch through the whole net in a thread of its own,
        at most one batch per device in flight, results in order.  A batch waits for its previous
        partition's output before it enqueues the next, so the devices work on successive batches at
        once, as the boards of a chain do."""
        def whole(values):
            return self._finish(self._run(self.plan.steps, values))
        with blas_threads(1), ThreadPoolExecutor(max_workers=len(self.places)) as pool:
            in_flight = deque()
            for inputs in batches:
                in_flight.append(pool.submit(whole, dict(check_inputs(self.graph, inputs))))
                if len(in_flight) == len(self.places):
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()

    def _timed_batch(self, values: dict, times: list) -> dict:
        """A batch run alone, device then host layers (one thread), its times appended to `times`;
        once enough are in, the stream's way of sharing the cores for this batch size is settled."""
        n = len(next(iter(values.values())))
        start = time.perf_counter()
        values = self._run(self.head, values)
        device_seconds = time.perf_counter() - start
        start = time.perf_counter()
        values = self._run(self.tail, values, 1)
        times.append((device_seconds, time.perf_counter() - start))
        if len(times) == WARM_UP_BATCHES + TIMED_BATCHES:   # the first ones warm up (buffers, PoCL's kernels)
            self.stream_timing[n] = tuple(np.min(times[WARM_UP_BATCHES:], axis=0))
            self.stream_split_cores[n] = self.split_cores_pays(*self.stream_timing[n])
        return values

    def split_cores_pays(self, device_seconds: float, host_seconds: float) -> bool:
        """Should a stream run its device stages on all cores but one (the host layers on the last),
        given a batch's device and host-layer times alone?

        Sharing all C cores, the device's threads and the host thread time-share them: a batch every
        (C * device + host) / C / SHARED_CORES_EFFICIENCY seconds, or host seconds if more (the host
        layers have one thread).  Partitioned, the device stages run on C - 1 cores and the host
        layers on the last: max(device * C / (C - 1), host).  The split wins where the two take
        similar times (AlexNet, 2 cores: batch 1, not batch 16).
        """
        if self.sub_queue is None:
            return False
        cores = self.device.max_compute_units
        shared = max(host_seconds, (cores * device_seconds + host_seconds) / cores / SHARED_CORES_EFFICIENCY)
        return bool(max(device_seconds * cores / (cores - 1), host_seconds) < shared)

    def _run(self, steps, values: dict, host_threads: int = 1, queue=None) -> dict:
        """Run `steps` in order. A segment is only waited for when a host step reads its output: a
        segment reading it takes it where it lies, in device memory (as a board's next segment finds
        it in DDR), where its port wants it as written, so that the whole run of segments is on the
        device's queue while the host reads back and converts the first outputs."""
        started = {}   # sink key -> the SegmentRun writing it (its buffers hold it after it is read back)

        def value(key):
            if key in started and key not in values:
                values.update(self.finish_segment(started[key]))
            return values[key]

        def operand(key, stage, port):
            """What a segment's `port` (of `stage`) reads: the run writing it, left on the device, or its value."""
            run = started.get(key)
            return OnDevice(run, key) if run is not None and self._hands_over(run, key, stage, port) else value(key)

        for step in steps:
            if isinstance(step, Segment):
                run = self.start_segment(step, self.segment_inputs(step, operand), queue)
                started.update((key, run) for key in step.sinks)
            else:
                outputs = self.run_host(step, [value(k) for k in step.inputs], host_threads)
                values.update(zip(step.outputs, outputs))
        for key in list(started):
            value(key)
        return values

    def segment_inputs(self, segment: Segment, value) -> dict:
        """{(stage index, input position): what that DDR port reads} for a segment; value(key, stage,
        port) -> a blob, or where a run left it on the device (OnDevice)."""
        inputs = {}
        for stage in segment.stages:
            ports = self.input_ports(stage)
            for position, (key, ddr) in enumerate(zip(stage.inputs, stage.from_ddr)):
                if ddr:
                    inputs[(stage.index, position)] = value(key, stage, ports[position])
        return inputs

    def input_ports(self, stage) -> list:
        """A stage's input ports in the layer's order."""
        code = self.codes[stage.index]
        ports = list(code.sides)
        ports.insert(stage.streamed, code.source_in)
        return ports

    def _hands_over(self, run: "SegmentRun", key: str, stage, port) -> bool:
        """Can `port` of `stage` read `key`, which `run` writes, straight from the device's memory?  Where
        the port wants that blob in the format it was written in -- in words of the same width, or of
        another where a kernel can lay it out again (not on an FPGA platform: there only the design's
        kernels run) --, the two segments share a device, the run is not the passes of a stage
        reloading its weights, and the net runs on one device (on several, chain_stream runs batches
        at once in threads of their own, which share the buffers)."""
        out = self.codes[run.segment.producer(key).index].sink
        where = self.place_of[stage.index]
        return (len(self.places) == 1 and len(run.outs[key]) == 1 and port.fmt == out.fmt
                and (port.width == out.width or not where.fpga)
                and self.place_of[run.segment.stages[0].index] is where)

    def _finish(self, values: dict) -> dict:
        return {name: values[key] for name, key in self.plan.final_keys.items() if key in values}

    def _port_buffers(self, segment: Segment, n: int) -> dict:
        """The DDR inputs, the channels (emulated: buffers holding the whole stream; on an FPGA
        platform real channels, no buffer) and the DDR outputs of a segment for n images; allocated
        once per segment and batch size."""
        key, where = (id(segment), n), self.place_of[segment.stages[0].index]
        if key not in where.buffers:
            ports = []
            for stage in segment.stages:
                ports += [(port, as_4d(shape)) for port, shape in zip(self.input_ports(stage), stage.layer.in_shapes)]
                ports += [(port, stage.out_shape) for port in self.codes[stage.index].outs]
            where.buffers[key] = {
                port.name: cl.Buffer(where.context, cl.mem_flags.READ_WRITE,
                                     n * h * w * padded(c, port.width) * storage_dtype(port.fmt).itemsize)
                for port, (_, c, h, w) in ports if not (where.fpga and port.channel)}
        return where.buffers[key]

    def _port_args(self, code, port_buffers: dict) -> list:
        fpga = self.place_of[code.stage.index].fpga
        return [port_buffers[port.name] for port in code.ports if not (fpga and port.channel)]

    def _winograd_scratch(self, where: DevicePlace, n: int) -> tuple:
        """The transformed inputs V and products M of a Winograd stage for n images: one pair per device,
        as big as the largest stage needs, shared by all (the queue runs one stage at a time)."""
        key = ("winograd", n)
        if key not in where.buffers:
            sizes = [(code.winograd[2] * n * code.winograd[0] * fast.padded(code.stage.in_shape[1]),
                      code.winograd[2] * n * code.winograd[0] * code.ndrange[0] * code.ndrange[1])
                     for code in self.codes.values() if code.winograd]
            where.buffers[key] = tuple(cl.Buffer(where.context, cl.mem_flags.READ_WRITE, 4 * max(size))
                                       for size in zip(*sizes))
        return where.buffers[key]

    def _enqueue_winograd(self, queue, stage, source, sink, n: int) -> list:
        """Input transform, the GEMMs, output transform (kernels/winograd_fast.cl); their events."""
        code = self.codes[stage.index]
        tiles, rows, positions = n * code.winograd[0], code.winograd[1], code.winograd[2]
        transformed, products = self._winograd_scratch(self.place_of[stage.index], n)
        weights, bias = self.stage_args[stage.index][0]
        transform_in, gemm = self.winograd_kernels[stage.index]
        transform_in.set_args(source, transformed, np.uint32(n))
        gemm.set_args(transformed, products, weights, np.uint32(n))
        transform_out = self.kernels[stage.index]
        transform_out.set_args(products, sink, bias, np.uint32(n))
        words_in, words_out = fast.padded(stage.in_shape[1]) // 8, fast.padded(stage.out_shape[1]) // 8
        return [cl.enqueue_nd_range_kernel(queue, transform_in, (words_in, tiles), (1, 1)),
                cl.enqueue_nd_range_kernel(queue, gemm, (-(-tiles // rows), code.ndrange[1], positions), (1, 1, 1)),
                cl.enqueue_nd_range_kernel(queue, transform_out, (words_out, tiles), (1, 1))]

    def _enqueue_layout(self, where: DevicePlace, queue, x: np.ndarray, port) -> np.ndarray:
        """Copy an (N, C, H, W) float32 blob to the device unchanged and lay it out there into `port`
        (kernels/layout_fast.cl): cheaper than transposing and padding it on the host.  Returns the
        host array the copy reads, which must live until the queue has run it."""
        n, c, h, w = x.shape
        key = ("layout", x.size)
        if key not in where.buffers:
            where.buffers[key] = cl.Buffer(where.context, cl.mem_flags.READ_ONLY, 4 * x.size)
        x = np.ascontiguousarray(x, np.float32)
        cl.enqueue_copy(queue, where.buffers[key], x, is_blocking=False)
        where.layout_kernel.set_args(where.buffers[key], port, np.int32(c), np.int32(h), np.int32(w),
                                     np.int32(fast.padded(c) // 8))
        cl.enqueue_nd_range_kernel(queue, where.layout_kernel, (fast.padded(c) // 8, n * h), (1, 1))
        return x

    def start_segment(self, segment: Segment, inputs: dict, queue=None) -> "SegmentRun":
        """Enqueue a segment on a batch: the input copies, every stage, the outputs' reads.  inputs:
        {(stage index, input position): blob, or OnDevice} for every DDR input port (segment_inputs).
        Where channels are emulated nothing waits; on an FPGA platform the stages run at once, each on
        its own queue, and this returns once they have all finished (or raises if they stall).
        `queue`: one of the device's own (forward_stream's choice of cores); on several devices, the
        segment's device's."""
        where = self.place_of[segment.stages[0].index]
        with where.lock:
            return self._start_segment(where, segment, inputs, queue if queue is not None and len(self.places) == 1
                                       else where.queue)

    def _start_segment(self, where: DevicePlace, segment: Segment, inputs: dict, queue) -> "SegmentRun":
        first = next(iter(inputs.values()))
        n = first.run.n if isinstance(first, OnDevice) else first.shape[0]
        port_buffers = self._port_buffers(segment, n)
        sources = []
        for stage in segment.stages:   # each DDR input in its port's format
            ports = self.input_ports(stage)
            for position, shape in enumerate(stage.layer.in_shapes):
                if stage.from_ddr[position]:
                    sources.append(self._copy_in(queue, stage, inputs[(stage.index, position)], as_4d(shape),
                                                 ports[position], port_buffers))
        events, reads = [], []
        outs = {key: [] for key in segment.sinks}
        # a conv reloading its weights is a segment of its own, run once per pass over the same input
        for number in range(segment.stages[0].passes):
            if where.fpga:
                queue.finish()
                events += self._run_together(segment, port_buffers, n, number)
            else:
                for stage in segment.stages:
                    events += self._enqueue_stage(queue, stage, port_buffers, n, number)
            for key in segment.sinks:
                stage = segment.producer(key)
                port = self.codes[stage.index].sink
                _, c, h, w = stage.out_shape
                outs[key].append(np.empty((n, h, w, padded(c, port.width)), storage_dtype(port.fmt)))
                reads.append(cl.enqueue_copy(queue, outs[key][-1], port_buffers[port.name], is_blocking=False))
        return SegmentRun(segment, events, reads, outs, sources, n)

    def _copy_in(self, queue, stage, blob, shape, port, port_buffers: dict) -> np.ndarray:
        """Enqueue the copy of `blob`, an input of `stage` of (N, C, H, W) `shape`, into `port`'s buffer,
        converted by the host into the port's format and stream layout (values that saturated count
        against the stage) -- or, a float blob where the fast variant has its layout kernel, copied as
        it is and laid out on the device.  Returns the host array the copy reads, which must live
        until the queue has run it.  `blob` may be OnDevice (_hands_over): the buffer another run wrote
        it into is then copied on the device, nothing converted."""
        if isinstance(blob, OnDevice):
            run = blob.run
            out = self.codes[run.segment.producer(blob.key).index].sink
            written = self._port_buffers(run.segment, run.n)[out.name]
            h, w = shape[2], shape[3]
            if port.width == out.width:
                cl.enqueue_copy(queue, port_buffers[port.name], written)
            else:
                c = shape[1]
                kernel = self.place_of[stage.index].relayout()
                kernel.set_args(written, port_buffers[port.name], np.int32(c), np.int32(padded(c, out.width)),
                                np.int32(padded(c, port.width)), np.int32(storage_dtype(port.fmt).itemsize))
                cl.enqueue_nd_range_kernel(queue, kernel, (run.n * h * w, padded(c, port.width)), None)
            return None
        blob = blob.reshape((len(blob),) + tuple(shape[1:]))   # another rank as placement.as_4d has it
        where = self.place_of[stage.index]
        if where.layout_kernel is not None and isinstance(port.fmt, Float):
            return self._enqueue_layout(where, queue, blob, port_buffers[port.name])
        stream, saturated = to_stream(blob, port.fmt, port.width)
        self.host_saturation[stage.index] += saturated
        cl.enqueue_copy(queue, port_buffers[port.name], stream, is_blocking=False)
        return stream

    def _enqueue_stage(self, queue, stage, port_buffers: dict, n: int, number: int = 0) -> list:
        """One stage's kernel(s) on `queue` (pass `number` of a conv reloading its weights):
        [(stage index, event)]."""
        code = self.codes[stage.index]
        if code.fast:   # an NDRange kernel writes one buffer; a forked stream's others are its copies
            source, sink = port_buffers[code.source_in.name], port_buffers[code.outs[0].name]
            if code.winograd:
                events = self._enqueue_winograd(queue, stage, source, sink, n)
            else:
                kernel = self.kernels[stage.index]
                kernel.set_args(source, sink, *self.stage_args[stage.index][number], np.uint32(n))
                pixels = n * stage.out_shape[2] * stage.out_shape[3]
                if code.ndrange:
                    _, blocks, rows = code.ndrange
                    # one work-item per work-group: each already holds a register tile, and PoCL's own
                    # vectorisation across work-items only gets in the way of the float16 arithmetic
                    events = [cl.enqueue_nd_range_kernel(queue, kernel, (-(-pixels // rows), blocks), (1, 1))]
                else:
                    events = [cl.enqueue_nd_range_kernel(queue, kernel, (pixels,), (1,))]
            for port in code.outs[1:]:
                cl.enqueue_copy(queue, port_buffers[port.name], sink)
            return [(stage.index, event) for event in events]
        kernel = self.kernels[stage.index]
        kernel.set_args(*self._port_args(code, port_buffers), *self.stage_args[stage.index][number], np.uint32(n))
        return [(stage.index, cl.enqueue_nd_range_kernel(queue, kernel, (1,), (1,)))]   # a task

    def _run_together(self, segment: Segment, port_buffers: dict, n: int, number: int = 0) -> list:
        """Launch every stage of a segment at once, each on its own queue (the launch an aoc design
        needs: the stages block on each other's channels), and wait for all of them.  A pipeline in
        which no stage finishes for stall_seconds per image has stalled -- a stage waits forever on a
        channel nobody writes, or to write one nobody reads -- and DeviceError names the stages that
        did not finish."""
        events = []
        for stage in segment.stages:
            queue = self.place_of[stage.index].stage_queues[stage.index]
            events += self._enqueue_stage(queue, stage, port_buffers, n, number)
            queue.flush()
        waiting = dict(events)
        limit = self.stall_seconds * max(1, n)
        last_progress = time.monotonic()
        while waiting:
            for index, event in list(waiting.items()):
                status = event.command_execution_status
                if status < 0:
                    raise DeviceError(f"{self.graph.path}: stage {index} '{self._stage_name(index)}' failed on "
                                      f"'{self.place_of[index].device.name.strip()}' (OpenCL status {status})")
                if status == cl.command_execution_status.COMPLETE:
                    del waiting[index]
                    last_progress = time.monotonic()
            if waiting and time.monotonic() - last_progress > limit:
                stuck = ", ".join(f"stage {index} '{self._stage_name(index)}'" for index in sorted(waiting))
                raise DeviceError(f"{self.graph.path}: the device pipeline stalled: no stage finished for "
                                  f"{limit:.0f} s; still running: {stuck}. A stage that waits on a channel nobody "
                                  f"writes, or to write one nobody reads, never finishes; this DeviceNet cannot "
                                  f"run again")
            if waiting:
                time.sleep(POLL_SECONDS)
        return events

    def _stage_name(self, index: int) -> str:
        return self.codes[index].stage.name

    def finish_segment(self, run: "SegmentRun") -> dict:
        """Wait for a started segment; {sink key: blob} (and its stages' device times counted)."""
        for read in run.reads:
            read.wait()
        with self.timing_lock:
            for index, event in run.events:
                self.stage_seconds[self._stage_name(index)] += (event.profile.end - event.profile.start) * 1e-9
        blobs = {}
        for key, outs in run.outs.items():
            stage = run.segment.producer(key)
            shares = [from_stream(out, stage.out_shape[1], stage.precision.outputs) for out in outs]
            result = np.concatenate(shares, axis=1) if len(shares) > 1 else shares[0]
            blobs[key] = result.reshape((len(result),) + tuple(stage.layer.out_shapes[0][1:]))
        return blobs

    def run_host(self, step: HostStep, inputs: list, threads: int = 1) -> list:
        """Inner products (over `threads` host threads) and softmax through cnnfpga.host, anything
        else through the float reference."""
        layer = step.layer
        if layer.name in self.inner_products:
            return [self.inner_products[layer.name].forward(inputs[0], threads)]
        if layer.type == "Softmax":
            return [softmax(inputs[0], axis=layer.spec.axis)]
        return REGISTRY[layer.type].reference(layer.spec, inputs, layer.blobs)
