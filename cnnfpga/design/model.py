"""A design on a board: every stage's cycles and resources, the channels, the totals, and the
predicted latency, throughput and efficiency.

Module -> layer -> pipeline, as in fpgaConvNet's model: the stage kinds give each stage's cycles and
resources (plain functions in conv.py, pool.py, lrn.py, relu.py); this module adds the channel FIFOs
and the segments' DDR ports, sums them, and runs the pipeline.

The pipeline model (``segment_cycles``): the stages of a segment run at once; each runs its own
schedule phase by phase (a phase of a window stage is an output row), and a phase that reads from a
channel cannot finish before the producer has written what it reads.  A producer's writes are
spread evenly over each of its phases; FIFOs are taken to be deep enough that a producer never
waits for its consumer (cnnfpga.design.size_channels sizes them to a phase's burst).  Segments run
one after another (the host works between them), the first stage reads DDR at one word per cycle,
and a launch first loads every stage's weights (LOAD_WIDTH values per cycle, in parallel).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..precision import Fixed, storage_bits
from . import kind
from .boards import logic_multiplier_cost, multipliers_per_block
from .cost import DDR_PORT_LOGIC, memory_cost
from .stage import Resources, ceil_div

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
    segment_cycles: list = field(default_factory=list)   # cycles of each segment for the batch
    host_seconds: float = 0.0

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
        """Cycles per image with images streaming back to back: each segment's slowest stage."""
        total = 0
        for segment in self.design.plan.segments:
            total += max(cost.schedule.image_iters for cost in self.stages if cost.stage in segment.stages)
        return total

    @property
    def fpga_cycles(self) -> int:
        """Cycles for a batch: from its first input word to its last output word, weights loaded first."""
        return sum(self.segment_cycles)

    @property
    def fpga_seconds(self) -> float:
        return self.fpga_cycles / (self.fmax_mhz * 1e6)

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
        return seconds

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
        for producer, consumer in zip(segment.stages, segment.stages[1:]):
            name = f"ch_{producer.index}_{consumer.index}"
            width_bits = design.of(producer).width_out * storage_bits(producer.precision.outputs)
            costs[name] = memory_cost(board, width_bits, design.channel_depths[name])
    return costs


def segment_port_logic(plan) -> int:
    """Every segment's DDR input and output ports."""
    return 2 * DDR_PORT_LOGIC * len(plan.segments)


def segment_cycles(design, segment, batch: int) -> int:
    """Cycles from a segment's launch to its last output word for `batch` images (see the module
    docstring for the model)."""
    return run_segment(design, segment, batch)[0]


def first_input_cycles(design, segment) -> dict:
    """{stage index: the cycle at which its producer writes its first word} for every stage of a
    segment but the first, were no weights loaded at the launch.  A stage loads its weights before it
    reads, so loads done by then delay nothing (not even the producer, which could otherwise fill
    the channel and wait)."""
    return run_segment(design, segment, 1, loads=False)[1]


def run_segment(design, segment, batch: int, loads: bool = True) -> tuple:
    """(cycles to the last output word, {stage index: cycle its producer writes its first word})."""
    producer = None     # (phase end times, cumulative writes at each phase end) of the previous stage
    end = 0
    first_inputs = {}
    for stage in segment.stages:
        schedule = design.schedule(stage)
        t = schedule.launch_iters if loads else 0
        reads_done, ends, written = 0, [], []
        total_written = 0
        for _ in range(batch):
            for iters, reads, writes in schedule.phases:
                finish = t + iters
                if producer is not None and reads:
                    reads_done += reads
                    first_inputs.setdefault(stage.index, time_written(producer, 1))
                    finish = max(finish, time_written(producer, reads_done) + iters - reads + 1)
                t = finish
                total_written += writes
                ends.append(t)
                written.append(total_written)
        producer = (ends, written, schedule)
        end = t
    return end, first_inputs


def time_written(producer, words: int) -> float:
    """When the producer has written `words` words: its writes spread evenly over each phase."""
    ends, written, _ = producer
    i = bisect.bisect_left(written, words)
    i = min(i, len(written) - 1)
    start_time = ends[i - 1] if i else 0
    before = written[i - 1] if i else 0
    in_phase = written[i] - before
    if in_phase <= 0:
        return ends[i]
    return start_time + (ends[i] - start_time) * (words - before) / in_phase


def evaluate(design, board, batch: int = 1, fmax_mhz: float = None, host_seconds: float = 0.0) -> Evaluation:
    """Cycles, resources and predictions of `design` on `board` at `batch` images per launch."""
    fmax = fmax_mhz or board.fmax_mhz
    costs = []
    for stage in design.plan.stages:
        schedule = design.schedule(stage)
        resources = kind(stage).resources(stage, design.of(stage), schedule, board)
        costs.append(StageCost(stage, schedule, resources, stage_macs(stage)))
    channels = channel_costs(design, board)
    totals = Resources()
    for cost in costs:
        totals = totals + cost.resources
    totals.ram_blocks += sum(blocks for blocks, _ in channels.values())
    totals.logic += sum(logic for _, logic in channels.values())
    totals.logic += segment_port_logic(design.plan)
    for segment in design.plan.segments:
        first, last = segment.stages[0], segment.stages[-1]
        totals.ddr_bytes_per_image += ddr_bytes(first, design.of(first).width_in, first.in_shape, first.precision.inputs)
        totals.ddr_bytes_per_image += ddr_bytes(last, design.of(last).width_out, last.out_shape, last.precision.outputs)
    evaluation = Evaluation(design, board, batch, fmax, costs, channels, totals, host_seconds=host_seconds)
    evaluation.segment_cycles = [segment_cycles(design, segment, batch) for segment in design.plan.segments]
    return evaluation


def ddr_bytes(stage, width: int, shape, fmt) -> int:
    _, c, h, w = shape
    return h * w * ceil_div(c, width) * width * storage_bits(fmt) // 8
