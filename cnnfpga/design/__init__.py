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
from . import concat, conv, eltwise, lrn, pool, relu
from .stage import Schedule, StageDesign, divisors
from .streams import WidthGroup, channels, set_width, width_groups

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
            for stage in segment.stages:
                kind(stage).check(stage, self.of(stage))
            for _, producer, consumer, _ in channels(segment):
                if self.of(producer).width_out != self.of(consumer).width_in:
                    raise DesignError(f"{consumer.layer.where}: reads words of {self.of(consumer).width_in} values "
                                      f"but '{producer.name}' writes words of {self.of(producer).width_out}")

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
        """Stages of segments that start a partition in the middle of another's streams (placement.cut_at
        cut it there): their inputs from the partition before cross a board link in a chain, or DDR
        between reconfigurations."""
        starts = {indices[0] for indices in self.partitions[1:]}
        return {stage.index for segment in self.plan.segments
                if segment.stages[0].index in starts and segment.cut for stage in segment.stages}


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in divisors(n) if d <= limit)


def channel_depth(producer_schedule: Schedule, consumer_schedule: Schedule) -> int:
    """A channel's depth for the rate of its two ends: the consumer's largest burst of reads -- the words
    a phase reads in its first iterations before it goes on computing (a window stage reads the next
    rows so) -- so that the producer, writing evenly, can work ahead while the consumer computes and the
    consumer finds its next rows waiting.  A stage that reads in every iteration of a phase needs no
    more than MIN_CHANNEL_DEPTH."""
    bursts = [reads for iterations, reads, _ in consumer_schedule.phases if iterations > reads]
    return max(MIN_CHANNEL_DEPTH, max(bursts, default=0))


def size_channels(design: Design) -> None:
    """Every channel's FIFO depth: its ends' rate (channel_depth), and on the way from a fork to a join
    at least the words the pipeline model finds waiting in it (model.channel_backlogs): a stream that
    forks runs only as far ahead on one branch as that branch's FIFOs hold, so where they hold less
    than the longer branch keeps the join waiting, the fork stalls and the pipeline with it."""
    from .model import channel_backlogs     # the model reads designs: imported when first needed
    backlogs = channel_backlogs(design)
    for segment in design.plan.segments:
        for name, producer, consumer, _ in channels(segment):
            design.channel_depths[name] = max(channel_depth(design.schedule(producer), design.schedule(consumer)),
                                              backlogs.get(name, 0))


def group_width(group: WidthGroup, stages: dict, overrides: dict, variant: str) -> int:
    """A default design's width for a group of streams: a width the user gave a convolution writing it
    (its width_out, or its co), else the largest that divides every writing convolution's co (its
    outputs leave in whole steps), else from DDR up to DEFAULT_WIDTH values; narrowed to divide the
    channels of every input but the last of a concat in the group (a word holds one input's channels:
    design/concat.py).  The fast variant's words are FAST_WIDTH values, which cannot narrow."""
    given = [overrides[s.name].get("width_out", overrides[s.name].get("co"))
             for s in group.producers + group.members if s.name in overrides]
    given = [width for width in given if width is not None]
    joined = [c for stage in group.members if stage.kind == "concat" for c in concat.input_channels(stage)[:-1]]
    if variant == "fast":
        for stage in (s for s in group.members if s.kind == "concat"):
            if math.gcd(FAST_WIDTH, *concat.input_channels(stage)[:-1]) == FAST_WIDTH:
                continue
            raise DesignError(f"{stage.layer.where}: the fast variant's words are {FAST_WIDTH} values, which must "
                              f"divide the channels of every input of a concat but the last "
                              f"({', '.join(map(str, concat.input_channels(stage)[:-1]))})")
        return FAST_WIDTH
    if given:
        return given[0]
    if group.producers:
        width = math.gcd(*(stages[p.index].co for p in group.producers))
    else:
        width = largest_divisor_at_most(group.channels, DEFAULT_WIDTH)
    return math.gcd(width, *joined)


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
    than 8 (a first layer's), every stream as wide as the convs writing it step (group_width), a
    segment's inputs up to DEFAULT_WIDTH values per word.  The fast variant's words are
    FAST_WIDTH values throughout.  ``parallelism`` overrides conv stages: {layer: (ci, co[, f])} or
    {layer: {"ci": .., "co": .., "f": .., "width_out": .., "weights": "ddr", ...}}; a changed output
    width (or co) is the width of every stream it flows into up to the next convolutions."""
    overrides = parse_overrides(plan, parallelism)
    stages = {}
    for stage in plan.stages:
        if stage.kind == "conv":
            cs = conv.shape(stage)
            ci = largest_divisor_at_most(cs.cg, DEFAULT_INPUTS)
            co = largest_divisor_at_most(cs.og, DEFAULT_OUTPUTS)
            if variant == "fast":   # co must divide the 8-value word
                co = max(d for d in divisors(cs.og) if FAST_WIDTH % d == 0)
            design = StageDesign(stage.index, "conv", 0, 0, ci, co, cs.kw if ci < 8 else 1)
        else:
            design = StageDesign(stage.index, stage.kind, 0, 0)
        changes = {name: value for name, value in overrides.get(stage.name, {}).items() if name != "width_out"}
        stages[stage.index] = replace(design, **changes)
    for group in width_groups(plan):
        width = group_width(group, stages, overrides, variant)
        stages = set_width(stages, group, width)
        for producer in group.producers:     # its outputs leave in whole steps of co within a word
            if width % stages[producer.index].co and not (variant == "fast" or producer.name in overrides):
                stages[producer.index] = replace(stages[producer.index], co=math.gcd(stages[producer.index].co, width))
    result = Design(plan, stages)
    result.check()
    size_channels(result)
    return result
