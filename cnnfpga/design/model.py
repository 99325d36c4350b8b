"""A design on a board: every stage's cycles and resources, the channels, the totals, and the
predicted latency, throughput and efficiency.

Module -> layer -> pipeline, as in fpgaConvNet's model: the stage kinds give each stage's cycles and
resources (plain functions in conv.py, pool.py, lrn.py, relu.py, eltwise.py, concat.py); this
module adds the channel FIFOs and the segments' DDR ports, sums them, and runs the pipeline.

The pipeline model (``run_stages``): the stages of a segment run at once; each runs its own
schedule phase by phase (a phase of a window stage is an output row), and a phase that reads from a
channel cannot finish before the producer has written what it reads (a sum or a concat reads each of
its inputs in proportion to its words).  A producer's writes are spread evenly over each of its
phases; FIFOs are taken to be deep enough that a producer never waits for its consumer
(cnnfpga.design.size_channels sizes them so: to a phase's burst, and from a fork to a join to the
backlog this model finds, ``channel_backlogs``).  Segments run one after another (the host works
between them), a stage reads DDR at one word per cycle, and a launch first loads every stage's
weights (LOAD_WIDTH values per cycle, in parallel).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from ..errors import DesignError
from ..precision import Fixed, storage_bits
from . import kind
from ..placement import as_4d
from .streams import channels
from .boards import logic_multiplier_cost, multipliers_per_block
from .cost import DDR_PORT_LOGIC, memory_cost
from .stage import Resources, ceil_div, padded

RESOURCES = ("dsp", "ram_blocks", "logic")


@dataclass
class StageCost:
    stage: object
    schedule: object
    resources: Resources
    macs: int                  # multiply-accumulates per image


@dataclass
class Evaluation:
    design: object
    board: object
    batch: int
    fmax_mhz: float
    stages: list                                    # StageCost per device stage, in plan order
    channels: dict = field(default_factory=dict)    # channel name -> (RAM blocks, logic)
    totals: Resources = None
    segment_cycles: list = field(default_factory=list)   # cycles of each timing group for the batch
    host_seconds: float = 0.0
    groups: list = field(default_factory=list)           # timing_groups(design)
    links: dict = field(default_factory=dict)            # (stage index, input position) -> Link (a chain's boards)
    partition_totals: list = field(default_factory=list)  # Resources of each partition's program

    # -- resources -------------------------------------------------------------------------------
    def capacity(self, resource: str) -> int:
        return {"dsp": self.board.dsp.blocks, "ram_blocks": self.board.ram.blocks,
                "logic": self.board.logic.count}[resource]

    def utilisation(self) -> dict:
        return {r: getattr(self.totals, r) / self.capacity(r) for r in RESOURCES}

    def binding(self) -> str:
        """The resource closest to running out."""
        used = self.utilisation()
        return max(RESOURCES, key=lambda r: used[r])

    def fits(self, max_util: float) -> bool:
        return all(used <= max_util for used in self.utilisation().values())

    # -- time ------------------------------------------------------------------------------------
    @property
    def interval_cycles(self) -> int:
        """Cycles per image with images streaming back to back: each timing group's slowest stage (or
        link), the groups one after another."""
        iters = {cost.stage.index: cost.schedule.image_cycles for cost in self.stages}
        total = 0
        for group in self.groups:
            indices = {stage.index for stage in group}
            total += max(max(iters[stage.index] for stage in group),
                         max((link_cycles(self.design, self.design.plan.stage(index), position, link)
                              for (index, position), link in self.links.items() if index in indices), default=0))
        return total

    @property
    def fpga_cycles(self) -> int:
        """Cycles for a batch: from its first input word to its last output word, weights loaded first
        (reconfigurations not included)."""
        return sum(self.segment_cycles)

    @property
    def reconfigurations(self) -> int:
        """Device reconfigurations per batch: every partition loaded in turn on one board."""
        partitions = len(self.design.partition_stages())
        return partitions if partitions > 1 and self.design.fpgas == 1 else 0

    @property
    def fpga_seconds(self) -> float:
        return self.fpga_cycles / (self.fmax_mhz * 1e6) + self.reconfigurations * self.board.reconfiguration_s

    @property
    def macs(self) -> int:
        return sum(cost.macs for cost in self.stages)

    def bound_seconds(self) -> float:
        """The physical limit for one image: every stage's MACs on all of the board's multipliers at
        its precision (multiplies narrow enough to build in logic: the DSP blocks' and as many as all
        the logic would build), at fmax."""
        seconds = 0.0
        for cost in self.stages:
            if cost.macs:
                bits = operand_bits(cost.stage)
                multipliers = self.board.dsp.blocks * multipliers_per_block(self.board, bits)
                in_logic = logic_multiplier_cost(self.board, bits) if bits is not None else None
                if in_logic:
                    multipliers += self.board.logic.count / in_logic
                seconds += cost.macs / multipliers / (self.fmax_mhz * 1e6)
        return seconds / self.design.fpgas

    def ddr_fraction(self) -> float:
        """The share of the board's DDR bandwidth a batch uses: its inputs and outputs and the weights
        streamed per image, and the weights loaded once per launch, over the batch's time."""
        bytes_moved = self.totals.ddr_bytes_per_image * self.batch + self.totals.ddr_bytes_per_launch
        return bytes_moved / self.fpga_seconds / (self.board.ddr_gbs * 1e9)

    def predicted(self) -> dict:
        fpga = self.fpga_seconds
        per_image = fpga / self.batch
        return {
            "ddr_fraction": self.ddr_fraction(),
            "interval_cycles": self.interval_cycles,
            "batch_cycles": self.fpga_cycles,
            "latency_ms": fpga * 1e3,
            "host_latency_ms": self.host_seconds * 1e3,
            "end_to_end_latency_ms": (fpga + self.host_seconds) * 1e3,
            "fpga_throughput_img_s": 1.0 / per_image,
            "throughput_img_s": self.batch / max(fpga, self.host_seconds),
            "gops": 2 * self.macs / per_image / 1e9,
            "bound_ms": self.bound_seconds() * 1e3,
            "efficiency": self.bound_seconds() / per_image,
            "interval_efficiency": self.bound_seconds() / (self.interval_cycles / (self.fmax_mhz * 1e6)),
            "partitions": len(self.design.partition_stages()),
            "fpgas": self.design.fpgas,
            "reconfigurations": self.reconfigurations,
            "reconfiguration_ms": self.reconfigurations * self.board.reconfiguration_s * 1e3,
        }


def operand_bits(stage):
    """Bits of a stage's multiplies (None: fp32): the wider of its weight and input formats."""
    p = stage.precision
    if not isinstance(p.inputs, Fixed):
        return None
    weights = p.weights.total_bits if isinstance(p.weights, Fixed) else p.inputs.total_bits
    return max(weights, p.inputs.total_bits)


def stage_macs(stage) -> int:
    return stage.layer.macs if stage.kind == "conv" else 0


def channel_costs(design, board) -> dict:
    """(RAM blocks, logic) of every channel FIFO: its depth in words of the edge's width x storage bits."""
    costs = {}
    for segment in design.plan.segments:
        for name, producer, _, _ in channels(segment):
            width_bits = design.of(producer).width_out * storage_bits(producer.precision.outputs)
            costs[name] = memory_cost(board, width_bits, design.channel_depths[name])
    return costs


def ddr_ports(segment) -> int:
    """A segment's DDR ports outside its sums and concats (whose kinds count their own): each stage
    streaming its input from DDR, and each blob it writes."""
    return sum(stage.from_ddr[stage.streamed] for stage in segment.stages) + len(segment.sinks)


def segment_port_logic(plan) -> int:
    """Every segment's DDR input and output ports."""
    return DDR_PORT_LOGIC * sum(ddr_ports(segment) for segment in plan.segments)


def first_input_cycles(design, segment) -> dict:
    """{stage index: the cycle at which its producer writes its first word} for every stage of a
    segment reading a channel, were no weights loaded at the launch.  A stage loads its weights before
    it reads, so loads done by then delay nothing (not even the producer, which could otherwise fill
    the channel and wait)."""
    return simulate(design, segment.stages, 1, loads=False).first_inputs


@dataclass(frozen=True)
class Link:
    """A board-to-board link into a stage (the next board of a chain): words arrive no faster than
    its bandwidth allows and `latency` cycles after they are written."""
    latency: float             # cycles
    bytes_per_cycle: float
    word_bytes: int            # bytes of one word of the stream it carries


@dataclass
class Run:
    """The pipeline model's run of some stages: when the last word is written, when each stage's first
    input arrives, and every stage's progress -- (phase end times, cumulative words written) -- and each
    channel consumer's -- (phase end times, cumulative words read of that input) by (index, position)."""
    end: float
    first_inputs: dict
    writes: dict
    reads: dict


def input_share(design, stage, position: int) -> float:
    """Words of input `position` a stage reads per word of its streamed input (a concat's inputs differ)."""
    width = design.of(stage).width_in
    return padded(as_4d(stage.layer.in_shapes[position])[1], width) / padded(stage.in_shape[1], width)


def simulate(design, stages, batch: int, loads: bool = True, links: dict = None, paced: bool = False) -> Run:
    """`stages` (topological order) streaming into one another; links: {(stage index, input position):
    Link} where a stage reads a producer's stream over a board link.  An input no stage of `stages`
    writes comes from DDR and never keeps a stage waiting.  paced: every stage's phases stretched so
    that it takes as long per image as the slowest -- the pace a pipeline of finite FIFOs settles to,
    its faster stages waiting on their channels."""
    links = links or {}
    writer = {stage.output: stage for stage in stages}
    progress, reads_of, first_inputs = {}, {}, {}
    end = 0
    slowest = max(design.schedule(stage).image_iters for stage in stages)
    for stage in stages:
        schedule = design.schedule(stage)
        stretch = slowest / max(1, schedule.image_iters) if paced else 1
        inputs = []     # (position, producer's progress, arrival function, share of the streamed reads)
        for position, key in enumerate(stage.inputs):
            producer = writer.get(key)
            if producer is None or (stage.from_ddr[position] and (stage.index, position) not in links):
                continue
            arrived = link_arrival(links[(stage.index, position)]) if (stage.index, position) in links else time_written
            inputs.append((position, progress[producer.index], arrived, input_share(design, stage, position)))
        t = 0
        read_so_far = {position: 0.0 for position, *_ in inputs}
        read_ends, read_counts = [], {position: [] for position, *_ in inputs}
        ends, written, total_written = [], [], 0
        # a stage reloading its weights is a segment of its own: its passes run one after another,
        # each loading its share of the weights and reading the batch again from DDR
        for _ in range(schedule.passes):
            t += schedule.launch_iters if loads else 0
            for _ in range(batch):
                for iters, reads, writes in schedule.phases:
                    finish = t + iters * stretch
                    if reads:
                        for position, producer, arrived, share in inputs:
                            words = reads * share
                            read_so_far[position] += words
                            first_inputs.setdefault(stage.index, arrived(producer, 1))
                            # the phase reads in its first iterations and computes in the others
                            finish = max(finish, arrived(producer, math.ceil(read_so_far[position] - 1e-9)) +
                                         (iters - min(iters, words) + 1) * stretch)
                    t = finish
                    total_written += writes
                    ends.append(t)
                    written.append(total_written)
                    read_ends.append(t)
                    for position in read_counts:
                        read_counts[position].append(read_so_far[position])
        progress[stage.index] = (ends, written)
        for position in read_counts:
            reads_of[(stage.index, position)] = (read_ends, read_counts[position])
        end = max(end, t)
    return Run(end, first_inputs, progress, reads_of)


def run_stages(design, stages, batch: int, loads: bool = True, links: dict = None) -> float:
    """Cycles to the last output word of `stages` streaming into one another (simulate)."""
    return simulate(design, stages, batch, loads, links).end


def link_arrival(link: Link):
    """When `words` of the producer's stream have crossed `link`: written, sent no faster than the
    link's bandwidth from the first word on, and the link's latency later."""
    def arrived(producer, words: int) -> float:
        first = time_written(producer, 1)
        return max(time_written(producer, words), first + words * link.word_bytes / link.bytes_per_cycle) + \
            link.latency
    return arrived


def time_written(producer, words: int) -> float:
    """When the producer has written `words` words: its writes spread evenly over each phase."""
    ends, written = producer
    i = bisect.bisect_left(written, words)
    i = min(i, len(written) - 1)
    start_time = ends[i - 1] if i else 0
    before = written[i - 1] if i else 0
    in_phase = written[i] - before
    if in_phase <= 0:
        return ends[i]
    return start_time + (ends[i] - start_time) * (words - before) / in_phase


def words_written_by(producer, t: float) -> float:
    """Words the producer has written by time t: its writes spread evenly over each phase."""
    ends, written = producer
    i = bisect.bisect_left(ends, t)
    if i >= len(ends):
        return written[-1]
    start_time = ends[i - 1] if i else 0
    before = written[i - 1] if i else 0
    if ends[i] <= start_time:
        return written[i]
    return before + (written[i] - before) * max(0.0, t - start_time) / (ends[i] - start_time)


BACKLOG_IMAGES = 2     # images the backlog run streams: the second starts while the first drains


def fork_join_channels(segment) -> set:
    """Names of the channels on a loop of the segment's streams (taken as undirected: a fork whose
    branches meet again in a join): where a FIFO that fills up stops the fork, so that the other branch
    cannot bring the join what it waits for.  A channel every way between two stages passes through
    (a bridge) can stop its writer but never the other branch of a loop."""
    edges = channels(segment)
    sized = set()
    for name, producer, consumer, _ in edges:
        others = {}
        for other, p, c, _ in edges:
            if other != name:
                others.setdefault(p.index, []).append(c.index)
                others.setdefault(c.index, []).append(p.index)
        seen, todo = {producer.index}, [producer.index]
        while todo:
            for nearby in others.get(todo.pop(), ()):
                if nearby not in seen:
                    seen.add(nearby)
                    todo.append(nearby)
        if consumer.index in seen:
            sized.add(name)
    return sized


def stream_words(design, stage) -> int:
    """Words of one image a stage writes."""
    _, c, h, w = stage.out_shape
    return h * w * ceil_div(c, design.of(stage).width_out)


def channel_backlogs(design) -> dict:
    """{channel name: the most words waiting in it} for the channels on a loop (fork_join_channels), in
    the pipeline model's paced run of BACKLOG_IMAGES images (simulate): every stage at the slowest
    one's pace, as finite FIFOs make them, so that what waits is how far one branch runs ahead of the
    other -- the words a fork must be able to write into the shorter branch while the longer one brings
    the join its first.  Weights loading at the launch is left out: a branch still loading only holds
    the fork up until it starts, it cannot stop it for good.  A consumer has read, by the end of a phase, at least what it read by
    the end of the one before, and the producer has written what its even writing gives; at most an
    image's words."""
    backlogs = {}
    for segment in design.plan.segments:
        sized = fork_join_channels(segment)
        if not sized:
            continue
        run = simulate(design, segment.stages, BACKLOG_IMAGES, loads=False, paced=True)
        for name, producer, consumer, position in channels(segment):
            if name not in sized:
                continue
            ends, counts = run.reads[(consumer.index, position)]
            waiting = [words_written_by(run.writes[producer.index], t) - (counts[i - 1] if i else 0)
                       for i, t in enumerate(ends)]
            # a FIFO holding an image never stops its fork within one (it only runs ahead of the join)
            backlogs[name] = min(math.ceil(max(waiting, default=0)), stream_words(design, producer))
    return backlogs


def timing_groups(design) -> list:
    """The stage lists the pipeline model runs one after another: each segment, except that on a chain
    of boards a segment starting a partition mid-stream runs at once with the one before it."""
    linked = design.links() if design.fpgas > 1 else set()
    groups = []
    for segment in design.plan.segments:
        if groups and segment.stages[0].index in linked:
            groups[-1] = groups[-1] + list(segment.stages)
        else:
            groups.append(list(segment.stages))
    return groups


def chain_links(design, board, fmax_mhz: float, groups: list) -> dict:
    """{(stage index, input position): Link} for the inputs a chain of boards feeds over the
    board-to-board link: what a stage of a partition reads from one of the partition before."""
    links, linked = {}, design.links()
    for group in groups:
        writer = {stage.output: stage for stage in group}
        for consumer in group:
            for position, (key, ddr) in enumerate(zip(consumer.inputs, consumer.from_ddr)):
                producer = writer.get(key)
                if consumer.index in linked and ddr and producer is not None and producer.index not in linked:
                    word_bytes = design.of(producer).width_out * storage_bits(producer.precision.outputs) // 8
                    links[(consumer.index, position)] = Link(board.link_latency_us * fmax_mhz,
                                                             board.link_gbs * 1e3 / fmax_mhz, word_bytes)
    return links


def link_cycles(design, stage, position: int, link: Link) -> float:
    """Cycles per image the link into input `position` of `stage` needs for the stream it carries."""
    _, c, h, w = as_4d(stage.layer.in_shapes[position])
    return h * w * ceil_div(c, design.of(stage).width_in) * link.word_bytes / link.bytes_per_cycle


def evaluate(design, board, batch: int = 1, fmax_mhz: float = None, host_seconds: float = 0.0) -> Evaluation:
    """Cycles, resources and predictions of `design` on `board` at `batch` images per launch.  A
    partitioned design's totals are its largest partition's (each program has the board to itself)."""
    fmax = fmax_mhz or board.fmax_mhz
    if design.fpgas > 1 and not board.link_gbs:
        raise DesignError(f"{board.name} has no board-to-board link (link_gbs 0): it cannot be chained")
    costs = {}
    for stage in design.plan.stages:
        schedule = design.schedule(stage)
        resources = kind(stage).resources(stage, design.of(stage), schedule, board)
        costs[stage.index] = StageCost(stage, schedule, resources, stage_macs(stage))
    channels_cost = channel_costs(design, board)
    groups = timing_groups(design)
    links = chain_links(design, board, fmax, groups) if design.fpgas > 1 else {}
    partition_totals = []
    for plan in design.partition_plans():
        totals = Resources()
        for stage in plan.stages:
            totals = totals + costs[stage.index].resources
        for segment in plan.segments:
            for name, *_ in channels(segment):
                blocks, logic = channels_cost[name]
                totals.ram_blocks += blocks
                totals.logic += logic
            # a stage reloading its weights reads its input once per pass, and writes a share each pass
            for stage in segment.stages:
                if stage.from_ddr[stage.streamed] and (stage.index, stage.streamed) not in links:
                    totals.ddr_bytes_per_image += stage.passes * ddr_bytes(stage, design.of(stage).width_in,
                                                                           stage.in_shape, stage.precision.inputs)
            linked_reads = {stage.inputs[position] for (index, position) in links
                            for stage in [design.plan.stage(index)]}
            for stage in segment.sink_stages():
                if stage.output not in linked_reads:
                    totals.ddr_bytes_per_image += stage.passes * ddr_bytes(stage, design.of(stage).width_out,
                                                                           stage.out_shape, stage.precision.outputs)
        totals.logic += segment_port_logic(plan)
        partition_totals.append(totals)
    totals = Resources(*(max(getattr(t, name) for t in partition_totals)
                         for name in ("multipliers", "dsp", "ram_blocks", "logic")),
                       sum(t.ddr_bytes_per_image for t in partition_totals),
                       sum(t.ddr_bytes_per_launch for t in partition_totals))
    evaluation = Evaluation(design, board, batch, fmax, [costs[stage.index] for stage in design.plan.stages],
                            channels_cost, totals, host_seconds=host_seconds, groups=groups, links=links,
                            partition_totals=partition_totals)
    evaluation.segment_cycles = [run_stages(design, group, batch, links=links) for group in groups]
    return evaluation


def ddr_bytes(stage, width: int, shape, fmt) -> int:
    _, c, h, w = shape
    return h * w * ceil_div(c, width) * width * storage_bits(fmt) // 8
