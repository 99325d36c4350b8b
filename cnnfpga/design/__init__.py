"""The hardware model and the Design it produces: how wide every device stage of a Plan is.

On the data path it sits between placement (what runs where) and the code generator (which writes
the design as kernel source): a Design gives each stage its parallelism, the width of every stream
and where conv weights live, each channel's FIFO depth, and -- through the stage kinds' modules
(conv, pool, lrn, relu, eltwise, concat) -- the exact loop trip counts the kernels are compiled with.  Without a
board, ``default_design`` picks modest widths that run well on a CPU; ``cnnfpga.design.balance``
sizes a design for a board, and ``python -m cnnfpga.design`` reports it.
"""
from __future__ import annotations

from collections.abc import Mapping
import math
from dataclasses import dataclass, field, replace

from ..errors import DesignError
from ..placement import CUT
from . import concat, conv, eltwise, lrn, pool, relu
from .stage import Schedule, StageDesign, divisors

KINDS = {"conv": conv, "pool": pool, "lrn": lrn, "relu": relu, "eltwise": eltwise, "concat": concat}
DEFAULT_INPUTS = 16       # ci of a default conv stage at most
DEFAULT_OUTPUTS = 32      # co of a default conv stage at most
DEFAULT_WIDTH = 8         # values per word of a segment's input, at most
FAST_WIDTH = 8            # the fast variant's kernels read and write 8-value float words
MIN_CHANNEL_DEPTH = 8


def kind(stage):
    """The module of a stage's kind (the kind's record: schedule, constants, costs, ...)."""
    return KINDS[stage.kind]


@dataclass
class Design:
    plan: object                                  # the placement.Plan being designed
    stages: dict                                  # stage index -> StageDesign
    channel_depths: dict = field(default_factory=dict)   # channel "ch_i_j" -> FIFO depth in words
    board: object = None                          # the Board it was sized for (None: no board)
    # stage indices of each partition, in order (cnnfpga.design.partitions; () is one program): each
    # partition is its own program, run in turn on one board (fpgas 1: reconfigured between them)
    # or each on its own board of a chain (fpgas = the number of partitions)
    partitions: tuple = ()
    fpgas: int = 1

    def __post_init__(self):
        self._schedules = {}

    def of(self, stage) -> StageDesign:
        return self.stages[stage.index]

    def schedule(self, stage) -> Schedule:
        key = (stage.index, self.of(stage))
        if key not in self._schedules:
            self._schedules[key] = kind(stage).schedule(stage, self.of(stage))
        return self._schedules[key]

    def check(self) -> None:
        """Every stage's parallelism valid for its layer, every stream as wide at both ends, and the
        partitions on one board or one board each."""
        if self.partitions and self.fpgas not in (1, len(self.partitions)):
            raise DesignError(f"{len(self.partitions)} partitions run on one board in turn or on "
                              f"{len(self.partitions)} boards, not on {self.fpgas}")
        for segment in self.plan.segments:
            for k, stage in enumerate(segment.stages):
                kind(stage).check(stage, self.of(stage))
                if k and self.of(segment.stages[k - 1]).width_out != self.of(stage).width_in:
                    raise DesignError(f"{stage.layer.where}: reads words of {self.of(stage).width_in} values but "
                                      f"'{segment.stages[k - 1].name}' writes words of "
                                      f"{self.of(segment.stages[k - 1]).width_out}")

    def describe(self) -> str:
        return self.plan.describe(parallelism=lambda stage: self.of(stage).describe())

    def partition_stages(self) -> list:
        """The stage indices of each program (one list for an unpartitioned design)."""
        return [list(p) for p in self.partitions] or [[stage.index for stage in self.plan.stages]]

    def partition_plans(self) -> list:
        """One plan per program: the segments of that partition (for codegen and balancing)."""
        if not self.partitions:
            return [self.plan]
        return [self.plan.only(indices) for indices in self.partitions]

    def links(self) -> set:
        """Stages that start a partition in the middle of a stream (placement.cut_at cut it there): their
        input crosses a board link in a chain, or DDR between reconfigurations."""
        starts = {indices[0] for indices in self.partitions[1:]}
        return {segment.stages[0].index for segment in self.plan.segments
                if segment.stages[0].index in starts and CUT in segment.source}


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in divisors(n) if d <= limit)


def channel_name(producer, consumer) -> str:
    return f"ch_{producer.index}_{consumer.index}"


def channel_depth(producer_schedule: Schedule, consumer_schedule: Schedule) -> int:
    """A channel's depth: the consumer's largest burst of reads -- the words a phase reads in its first
    iterations before it goes on computing (a window stage reads the next rows so) -- so that the
    producer, writing evenly, can work ahead while the consumer computes and the consumer finds its
    next rows waiting.  A stage that reads in every iteration of a phase needs no more than
    MIN_CHANNEL_DEPTH."""
    bursts = [reads for iterations, reads, _ in consumer_schedule.phases if iterations > reads]
    return max(MIN_CHANNEL_DEPTH, max(bursts, default=0))


def size_channels(design: Design) -> None:
    for segment in design.plan.segments:
        for producer, consumer in zip(segment.stages, segment.stages[1:]):
            design.channel_depths[channel_name(producer, consumer)] = channel_depth(design.schedule(producer),
                                                                                    design.schedule(consumer))


def narrow_to_concat(stages: dict, segment, stage, width: int, variant: str) -> int:
    """The width a concat stage can take (it divides the channels of every input but the last:
    design/concat.py), given `width` arriving: where that one does not, the stream is narrowed back
    to the convolution writing it (or the segment's start) -- every stage between keeps as wide in
    as out.  The fast variant's words are FAST_WIDTH values, which cannot narrow."""
    fitting = math.gcd(width, *concat.input_channels(stage)[:-1])
    if fitting == width:
        return width
    if variant == "fast":
        raise DesignError(f"{stage.layer.where}: the fast variant's words are {FAST_WIDTH} values, which must divide "
                          f"the channels of every input of a concat but the last "
                          f"({', '.join(map(str, concat.input_channels(stage)[:-1]))})")
    for before in reversed(segment.stages[:segment.stages.index(stage)]):
        if before.kind == "conv":   # its outputs leave in whole steps: co narrows with the words
            conv_design = stages[before.index]
            stages[before.index] = replace(conv_design, co=math.gcd(conv_design.co, fitting), width_out=fitting)
            break
        stages[before.index] = replace(stages[before.index], width_in=fitting, width_out=fitting)
    return fitting


STAGE_FIELDS = ("ci", "co", "f", "width_out", "weights", "load_width", "logic_multipliers")


def parse_overrides(plan, parallelism) -> dict:
    """{layer name: {field: value}} from a user's {layer: (ci, co[, f]) or {field: value}} mapping."""
    if parallelism is None:
        return {}
    if not isinstance(parallelism, Mapping):
        raise DesignError(f"parallelism must be a mapping {{layer name: (ci, co[, f]) or {{'ci': ..}}}}, "
                          f"got {type(parallelism).__name__}")
    names = {stage.name: stage for stage in plan.stages}
    overrides = {}
    for name, value in parallelism.items():
        if name not in names:
            raise DesignError(f"parallelism given for '{name}', which is not a device stage of the net "
                              f"(device stages: {', '.join(names) or 'none'})")
        if isinstance(value, Mapping):
            unknown = [key for key in value if key not in STAGE_FIELDS]
            if unknown:
                raise DesignError(f"parallelism of '{name}': unknown field '{unknown[0]}' "
                                  f"(fields: {', '.join(STAGE_FIELDS)})")
            overrides[name] = dict(value)
        elif isinstance(value, (tuple, list)) and len(value) in (2, 3) and names[name].kind == "conv" \
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            overrides[name] = dict(zip(("ci", "co", "f"), value))
        else:
            raise DesignError(f"parallelism of '{name}' must be (ci, co), (ci, co, f) for a convolution, or a "
                              f"mapping of {', '.join(STAGE_FIELDS)}; got {value!r}")
    return overrides


def default_design(plan, parallelism=None, variant: str = "fpga") -> Design:
    """A design that runs well on a CPU (no board): conv stages of up to DEFAULT_INPUTS input and
    DEFAULT_OUTPUTS output channels per step, a kernel row per step where the inputs are fewer
    than 8 (a first layer's), every stream as wide as the conv before it writes (its co), a
    segment's input up to DEFAULT_WIDTH values per word.  The fast variant's words are
    FAST_WIDTH values throughout.  ``parallelism`` overrides conv stages: {layer: (ci, co[, f])} or
    {layer: {"ci": .., "co": .., "f": .., "width_out": .., "weights": "ddr", ...}}; a changed output
    width carries on down the segment."""
    overrides = parse_overrides(plan, parallelism)
    stages = {}
    for segment in plan.segments:
        width = None
        for stage in segment.stages:
            if width is None:
                width = FAST_WIDTH if variant == "fast" else largest_divisor_at_most(stage.in_shape[1], DEFAULT_WIDTH)
            if stage.kind == "conv":
                cs = conv.shape(stage)
                ci = largest_divisor_at_most(cs.cg, DEFAULT_INPUTS)
                co = largest_divisor_at_most(cs.og, DEFAULT_OUTPUTS)
                if variant == "fast":   # co must divide the 8-value word
                    co = max(d for d in divisors(cs.og) if FAST_WIDTH % d == 0)
                f = cs.kw if ci < 8 else 1
                design = StageDesign(stage.index, "conv", width, FAST_WIDTH if variant == "fast" else co, ci, co, f)
            else:
                if stage.kind == "concat":
                    width = narrow_to_concat(stages, segment, stage, width, variant)
                design = StageDesign(stage.index, stage.kind, width, width)
            if stage.name in overrides:
                changes = overrides[stage.name]
                if stage.kind == "conv" and "co" in changes and "width_out" not in changes and variant != "fast":
                    changes = dict(changes, width_out=changes["co"])
                design = replace(design, **changes)
                if stage.kind != "conv":
                    design = replace(design, width_in=width)
            stages[stage.index] = design
            width = design.width_out
    result = Design(plan, stages)
    result.check()
    size_channels(result)
    return result
