"""The pycaffe-shaped Net: blobs, params, forward, reshape, save."""
from collections import OrderedDict
import logging
import math
import os
import time
import warnings

import numpy as np

from . import reference
from .reference import checked_input
from .errors import CnnfpgaError, InputError, ResourceError, WeightsError
from .graph import available_memory, load_graph
from .precision import calibration_statistics

TRAIN, TEST = 0, 1  # pycaffe's phase constants; only TEST (inference) is supported
BACKENDS = ("reference", "opencl")
log = logging.getLogger("cnnfpga")


class Blob:
    """A named array, as `net.blobs[name]` / `net.params[layer][i]` in pycaffe."""

    def __init__(self, data: np.ndarray):
        self.data = data

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def count(self) -> int:
        return self.data.size

    def reshape(self, *shape) -> None:
        """Give the blob a new shape (pycaffe semantics: contents are not kept); the net follows on forward."""
        self.data = np.zeros(checked_shape(shape), dtype=np.float32)

    def __repr__(self):
        return f"Blob{list(self.shape)}"


def checked_shape(shape) -> tuple:
    """Whole numbers >= 1 whose float32 array fits in the memory available; a clear error otherwise."""
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape):
        raise InputError(f"reshape{tuple(shape)}: every dimension must be a whole number")
    dims = tuple(int(d) for d in shape)
    if not dims or min(dims) < 1:
        raise InputError(f"reshape{dims}: every dimension must be at least 1 (a batch of at least one image)")
    needed = 4 * math.prod(dims)   # Python integers: no int64 overflow to a small number
    if needed > available_memory():
        raise ResourceError(f"reshape{dims}: a float32 blob of {needed / 2**30:,.1f} GiB does not fit in the "
                            f"{available_memory() / 2**30:.1f} GiB available")
    return dims


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_device_options(stall_seconds, prune_threshold, host_threads, calibration) -> None:
    """The OpenCL backend's numeric options, and the kind of calibration: refused here, before any build."""
    if stall_seconds is not None and not (is_number(stall_seconds) and 0 < stall_seconds < math.inf):
        raise CnnfpgaError(f"stall_seconds= takes a positive number of seconds, got {stall_seconds!r}")
    if prune_threshold is not None and not (is_number(prune_threshold) and 0 <= prune_threshold < math.inf):
        raise CnnfpgaError(f"prune_threshold= takes a number >= 0 (or None: no pruning), got {prune_threshold!r}")
    if host_threads is not None and not (isinstance(host_threads, (int, np.integer)) and not
                                         isinstance(host_threads, bool) and host_threads >= 1):
        raise CnnfpgaError(f"host_threads= takes a whole number >= 1, got {host_threads!r}")
    kinds = (str, os.PathLike, np.ndarray, dict, list, tuple)
    if calibration is not None and not isinstance(calibration, kinds):
        raise CnnfpgaError(f"calibration= takes input batches (an array, {{input: array}} or a list of those), "
                           f"{{blob: level}} statistics or a statistics JSON file, got {type(calibration).__name__}")
    if isinstance(calibration, (list, tuple)) and not all(isinstance(batch, dict) for batch in calibration):
        raise CnnfpgaError("calibration= as a list takes {input: array} batches")


class LayerInfo:
    def __init__(self, layer):
        self.name, self.type = layer.name, layer.type
        self.bottoms, self.tops = list(layer.bottoms), list(layer.tops)

    def __repr__(self):
        return f"<{self.type} '{self.name}'>"


class Net:
    """A Caffe net. `backend="reference"` runs the numpy golden model; `backend="opencl"` runs the device
    stages as OpenCL kernels (PoCL, an FPGA, any OpenCL device) and the inner products on the host.

    >>> net = Net("lenet.prototxt", "lenet.caffemodel")
    >>> net.blobs["data"].data[...] = images
    >>> prob = net.forward()["prob"]
    """

    def __init__(self, net_file, weights=None, backend="reference", *, phase=TEST, seed=0, device=None,
                 precision="float", calibration=None, bitstream=None, prune_threshold=0.0, variant="fpga",
                 parallelism=None, host_threads=None, design=None, stall_seconds=None, count_cycles=False):
        if isinstance(backend, int):  # caffe.Net(proto, weights, caffe.TEST)
            backend, phase = "reference", backend
        if phase != TEST:
            raise CnnfpgaError("only the TEST phase (inference) is supported")
        if backend not in BACKENDS:
            raise CnnfpgaError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
        if backend == "reference":
            given = {"device": device, "calibration": calibration, "bitstream": bitstream, "parallelism": parallelism,
                     "host_threads": host_threads, "design": design, "stall_seconds": stall_seconds}
            given = [name for name, value in given.items() if value is not None]
            given += [name for name, value, default in [("precision", precision, "float"), ("variant", variant, "fpga"),
                                                        ("prune_threshold", prune_threshold, 0.0),
                                                        ("count_cycles", count_cycles, False)] if value != default]
            if given:   # the golden model is float32 on the CPU: nothing of these would change what it does
                raise CnnfpgaError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to backend='opencl'; "
                                   f"the reference backend (the "
                                   f"float32 golden model) takes none of them")
        else:
            from .codegen import VARIANTS
            if variant not in VARIANTS:
                raise CnnfpgaError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
            several = isinstance(device, (list, tuple)) and device and all(isinstance(d, str) for d in device)
            if device is not None and not isinstance(device, str) and not several:
                raise CnnfpgaError(f"device= takes an OpenCL platform/device name (a part of it) or 'P:D' "
                                   f"indices as a string, or a list of them (one per partition of a design), "
                                   f"got {type(device).__name__} {device!r}")
            check_device_options(stall_seconds, prune_threshold, host_threads, calibration)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise CnnfpgaError(f"seed= takes a whole number from 0 to 2**63 - 1, got {seed!r}")
        from .bundled import resolve
        self.net_file = resolve(net_file)
        self.weights_file = resolve(weights) if weights else None
        self.backend = backend
        self.graph = load_graph(self.net_file, self.weights_file, seed=seed)
        if backend == "opencl" and calibration is not None:
            # statistics once, here: the executor is rebuilt whenever the input shape changes
            calibration = calibration_statistics(self.graph, calibration)
        if design is not None:
            # a design folder fixes the precision and the parallelism: what its report and design.cl say
            if backend != "opencl" or variant != "fpga":
                raise CnnfpgaError(f"design={design!r} runs on backend='opencl' with variant='fpga'")
            if precision != "float" or calibration is not None or parallelism is not None:
                raise CnnfpgaError(f"design={design!r} fixes the precision and the parallelism; "
                                   "do not pass precision=, calibration= or parallelism= with it")
        self.design_dir = design
        self.device_options = dict(device=device, precision=precision, bitstream=bitstream, variant=variant,
                                   prune_threshold=prune_threshold, parallelism=parallelism, host_threads=host_threads,
                                   calibration=calibration, stall_seconds=stall_seconds, count_cycles=count_cycles,
                                   keep=())
        self.params = OrderedDict((layer.name, [Blob(b) for b in layer.blobs]) for layer in self.graph.layers
                                  if layer.blobs)
        self._attach(self.graph)

    # -- structure ---------------------------------------------------------------------------------
    def _attach(self, graph) -> None:
        """(Re)build blobs and the executor for `graph`, keeping the user's weight arrays."""
        for layer in graph.layers:  # net.params[...].data may have been replaced by the user
            if layer.name in self.params:
                layer.blobs = [np.ascontiguousarray(p.data, dtype=np.float32) for p in self.params[layer.name]]
        graph.check_memory()
        self.graph = graph
        self.blobs = OrderedDict((name, Blob(np.zeros(shape, dtype=np.float32))) for name, shape in graph.shapes.items())
        self.layers = [LayerInfo(layer) for layer in graph.layers]
        self._executor = None
        self._saturation_warned = False

    @property
    def inputs(self) -> list:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list:
        return list(self.graph.outputs)

    @property
    def executor(self):
        """The OpenCL executor, built on first use (kernel compilation can take a while)."""
        if self._executor is None and self.backend == "opencl":
            from .runtime import DeviceNet
            start = time.perf_counter()
            options = dict(self.device_options)
            if self.design_dir is not None:
                options.update(design=self.stored_design(), precision=None, parallelism=None)
            self._executor = DeviceNet(self.graph, **options)
            log.info("%s: %d device stage(s) ready on %s in %.1f s", os.path.basename(self.net_file),
                     len(self._executor.plan.stages), self._executor.device.name.strip(), time.perf_counter() - start)
        return self._executor

    def reshape(self) -> None:
        """Follow input blobs the user reshaped (batch size, image size)."""
        wanted = {name: self.blobs[name].data.shape for name in self.inputs}
        if any(tuple(shape) != tuple(self.graph.inputs[name]) for name, shape in wanted.items()):
            kept = {name: self.blobs[name].data for name in self.inputs}
            self._attach(self.graph.reshape(wanted))
            for name, data in kept.items():
                self.blobs[name].data = data

    def plan(self) -> str:
        """Where each layer runs, in which precision and with which parallelism."""
        if self.backend != "opencl":
            return "\n".join(f"{layer.name:24s} {layer.type:14s} host (numpy reference) float  "
                             f"{list(layer.out_shapes[0])}" for layer in self.graph.layers)
        return self.executor.design.describe()

    def opencl_source(self) -> str:
        """The generated OpenCL source of the device stages, FPGA variant, with Intel channels: what to
        compile with aoc (`aoc design.cl`) and load with `Net(..., bitstream="design.aocx")`. Needs no
        OpenCL device. (Built with -D CNNFPGA_EMULATE_CHANNELS it is what PoCL runs in the tests.)"""
        from . import codegen
        from .design import default_design
        from .placement import place
        if self.design_dir is not None:
            sources = codegen.program_sources(self.stored_design())
            if len(sources) > 1:
                raise CnnfpgaError(f"{self.design_dir}: a design of {len(sources)} programs (partitions) has one "
                                   f"source each: use opencl_sources()")
            return sources["design.cl"]
        options = self.device_options
        plan = place(self.graph, options["precision"], calibration_statistics(self.graph, options["calibration"]),
                     keep=options["keep"])
        return codegen.generate(plan, default_design(plan, options["parallelism"])).source

    def opencl_sources(self) -> dict:
        """{file name: source} of every program: design.cl, or design_p1.cl, design_p2.cl, ... for a
        design= folder of several partitions (one bitstream each)."""
        from . import codegen
        if self.design_dir is not None:
            return codegen.program_sources(self.stored_design())
        return {"design.cl": self.opencl_source()}

    def stored_design(self):
        """The design in the design= folder, for this net: exactly what its design.cl describes."""
        from pathlib import Path

        from . import codegen
        from .design.store import load_design
        from .errors import DesignError
        design = load_design(self.design_dir, self.graph)
        for name, source in codegen.program_sources(design).items():
            written = Path(self.design_dir) / name
            if written.is_file() and written.read_text() != source:
                raise DesignError(f"{written}: differs from the source design.json gives (edited, or written by "
                                  f"another cnnfpga version); run python -m cnnfpga.design again")
        return design

    # -- running -----------------------------------------------------------------------------------
    def _keep(self, blobs: list) -> None:
        """Blobs forward(blobs=...) asks for that stream between the stages of a device segment, never in
        memory: the executor is built again writing them out as well (DeviceNet's keep=).  A stored
        design's segments write what they were designed to write."""
        plan = self.executor.plan
        streamed = {stage.output for stage in plan.stages} - {key for s in plan.segments for key in s.sinks}
        wanted = [name for name in blobs if plan.final_keys.get(name) in streamed]
        if wanted and self.design_dir is not None:
            raise InputError(f"{os.path.basename(self.net_file)}: '{wanted[0]}' streams between device stages of the "
                             f"design in {self.design_dir} and is never written to memory; run without design= "
                             f"to read it")
        if wanted:
            self.device_options["keep"] = sorted(set(self.device_options["keep"]) | set(wanted))
            self._executor = None

    def forward(self, blobs=None, **inputs) -> dict:
        """Run the net. Inputs come from keyword arguments (name=array) or from `net.blobs[name].data`.
        Returns {output name: array} and the blobs named in `blobs`.  On the OpenCL backend `net.blobs`
        then holds what the device wrote to memory and the host computed; a blob streaming between the
        stages of a device segment stays as it was, unless named in `blobs` (the net is then built
        again to write it out)."""
        unknown = [b for b in (blobs or []) if b not in self.blobs]
        if unknown:
            raise InputError(f"{os.path.basename(self.net_file)}: forward(blobs=...) names {unknown[0]!r}, which is "
                             f"not a blob of the net (blobs: {', '.join(self.blobs)})")
        for name in inputs:
            if name not in self.graph.inputs:
                raise InputError(f"{os.path.basename(self.net_file)}: '{name}' is not an input of the net "
                                 f"(inputs: {self.inputs})")
        if inputs and len(inputs) < len(self.inputs):   # the others would run on whatever their blobs hold
            missing = [name for name in self.inputs if name not in inputs]
            raise InputError(f"{os.path.basename(self.net_file)}: forward() got data for {', '.join(inputs)} but not "
                             f"for {', '.join(missing)}; give every input as a keyword, or set them all in net.blobs")
        for name in self.inputs:
            data = inputs[name] if name in inputs else self.blobs[name].data
            self.blobs[name].data = checked_input(self.net_file, name, data, self.graph.inputs[name])
        self.reshape()
        self._follow_params()
        feed = {name: self.blobs[name].data for name in self.inputs}
        if self.backend == "opencl":
            self._keep(blobs or [])
            results = self.executor.forward(feed)
            self._warn_of_saturation()
        else:
            results = reference.forward(self.graph, feed)
        for name, value in results.items():
            if name in self.blobs:
                self.blobs[name].data = value
        wanted = self.outputs + [b for b in (blobs or []) if b not in self.outputs]
        return {name: self.blobs[name].data for name in wanted}

    def _follow_params(self) -> None:
        """Weights the user replaced (`net.params[name][i].data = array`) take effect, as in pycaffe;
        the OpenCL program is rebuilt around them."""
        replaced = False
        for layer in self.graph.layers:
            for i, blob in enumerate(self.params.get(layer.name, [])):
                if blob.data is layer.blobs[i]:
                    continue
                where = f"{os.path.basename(self.net_file)}: net.params['{layer.name}'][{i}].data"
                try:
                    data = np.ascontiguousarray(blob.data, dtype=np.float32)
                except (ValueError, TypeError) as error:
                    raise WeightsError(f"{where}: not an array of numbers ({error})") from None
                if data.shape != layer.blobs[i].shape:
                    raise WeightsError(f"{where} has shape {list(data.shape)}; the layer needs "
                                       f"{list(layer.blobs[i].shape)}")
                layer.blobs[i] = blob.data = data
                replaced = True
        if replaced:
            self._executor = None

    def _warn_of_saturation(self) -> None:
        """One warning per net, the first time a forward saturates a fixed-point value or overflows an fp16."""
        if self._saturation_warned:
            return
        counts = {name: count for name, count in self.executor.saturation().items() if count}
        if counts:
            self._saturation_warned = True
            listing = ", ".join(f"{name} {count:,}" for name, count in counts.items())
            warnings.warn(f"{os.path.basename(self.net_file)}: values saturated (out of the fixed-point range or "
                          f"fp16 overflow) in {listing}; totals so far: net.executor.saturation(); calibrate or "
                          f"widen those formats", UserWarning, stacklevel=3)

    def save(self, path: str) -> None:
        """Write the current weights as a caffemodel (the current `layer` format; Caffe and OpenCV read it)."""
        from .caffe.writer import write_caffemodel
        write_caffemodel(path, self.graph.name, [(layer.name, layer.type,
                                                  [np.asarray(p.data, dtype=np.float32) for p in self.params[layer.name]])
                                                 for layer in self.graph.layers if layer.name in self.params])
