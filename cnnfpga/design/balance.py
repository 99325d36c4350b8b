"""Balancing: every stage's parallelism and every stream's width for a board, so that the slowest
stage is as fast as the resources allow.

The search is greedy and deterministic (fpgaConvNet's rule-based optimiser in spirit):
1. Start from a small design: every convolution START_PRODUCT multiplies per step (the (ci, co, f)
   whose weight memory packs into the fewest RAM blocks) with its weights on chip, every stream one
   value wide.  If that does not fit under the cap, move the convolution with the
   most on-chip weight memory to streaming its weights from DDR, and again, while it helps; if it
   still does not fit, DesignError names the binding resource and by how much it is exceeded.
2. Repeat: take the slowest stage of each segment, slowest first, and list the changes that make it
   faster -- a wider input stream (where reading limits it), the next few larger parallelisms of a
   convolution (for each F, every (ci, co) of the next products; multiplies of 10 bits or fewer
   also in logic), a wider stream for pooling, ReLU and LRN, weights back on chip.  Of those that fit under the cap, keep the one that saves the most cycles of that
   stage per share of the board it costs (a resource's share counted against what is left of it).
   A segment whose slowest stage cannot be made faster is done; the search ends when all are (a
   segment taking under 1% of an image's cycles is not worth the resources and is left alone).
   Then trim: give every other stage the cheapest parallelism that keeps it within its segment's
   slowest stage's cycles, and go on speeding up with what that freed, while that helps.
3. Latency objective: then, while it helps, apply the change to any stage that shortens the batch's
   latency most (by at least 0.5%) and fits (making the last layers faster shortens the tail).
4. Loads: while searching, the DDR bandwidth for loading weights and tables at a launch is shared
   among the stages that load, in proportion to what they load, so that they all finish together.
   Finally a stage whose first input comes later than the launch gets only the share that loads its
   weights by then (with_loads_by_need), and the first stages take the rest: the first image is not
   held up by weights the last stages need only much later.
"""
from __future__ import annotations

from dataclasses import replace

from ..errors import DesignError
from ..precision import storage_bits
from . import Design, channel_depth, conv, kind, size_channels
from .streams import WidthGroup, channels, set_width, width_groups
from .cost import memory_cost
from .model import RESOURCES, channel_backlogs, evaluate, first_input_cycles, segment_port_logic
from .stage import Resources, StageDesign, divisors, padded

OBJECTIVES = ("latency", "throughput")
PARALLELISM_STEPS = 4      # larger parallelism products tried for each kernel positions per step
LATENCY_MOVES = 40         # changes the latency pass may make at most
LATENCY_GAIN = 0.005       # the least share of the latency a change in the latency pass must save
MINOR_SEGMENT = 0.01       # a segment under this share of an image's cycles is left as it is
LOAD_SLACK = 0.8          # a later stage's weights are loaded by this share of the time to its first input
MAX_LOAD_WIDTH = 64       # values a load port takes per cycle at most (1024 bits of 16-bit weights)
BACKLOG_ROUNDS = 3         # balancing rounds at most, each with the FIFO backlogs the one before found
START_PRODUCT = 16         # multiplies per step a convolution starts with: its weight memory's words are then
                           # wide enough to fill RAM blocks (one value per word would waste most of each)


def width_choices(group: WidthGroup, stages: dict) -> list:
    """Widths worth trying: divisors of the channel count (no padding) and, after one conv, multiples
    of its co up to the channels (its outputs gather into whole words)."""
    c = group.channels
    choices = set(divisors(c))
    if len(group.producers) == 1:
        co = stages[group.producers[0].index].co
        choices.update(range(co, padded(group.producers[0].out_shape[1], co) + 1, co))
    return sorted(choices)


class Search:
    def __init__(self, plan, board, batch, objective, max_util, fmax_mhz, host_seconds):
        if objective not in OBJECTIVES:
            raise DesignError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if not 0 < max_util <= 1:
            raise DesignError(f"the resource cap must be a fraction in (0, 1], got {max_util}")
        self.plan, self.board, self.batch, self.objective = plan, board, batch, objective
        self.max_util, self.fmax, self.host_seconds = max_util, fmax_mhz or board.fmax_mhz, host_seconds
        self.allowed = {r: max_util * capacity(board, r) for r in RESOURCES}
        self.groups = width_groups(plan)
        self.group_of_input, self.group_of_output = {}, {}
        for group in self.groups:
            for member in group.members:
                self.group_of_input[member.index] = self.group_of_output[member.index] = group
            for consumer in group.consumers:
                self.group_of_input[consumer.index] = group
            for producer in group.producers:
                self.group_of_output[producer.index] = group
        self.channels = [(name, p, c) for segment in plan.segments for name, p, c, _ in channels(segment)]
        # values waiting in each channel on a loop of forked streams (model.channel_backlogs), as far as
        # known: its FIFO holds at least these, in words of whatever width the trial gives it
        self.backlog_values = None
        self._schedules, self._resources = {}, {}

    # -- cached pieces ---------------------------------------------------------------------------
    def schedule(self, stages: dict, stage):
        key = (stage.index, stages[stage.index])
        if key not in self._schedules:
            self._schedules[key] = kind(stage).schedule(stage, stages[stage.index])
        return self._schedules[key]

    def stage_resources(self, stages: dict, stage) -> Resources:
        key = (stage.index, stages[stage.index])
        if key not in self._resources:
            self._resources[key] = kind(stage).resources(stage, stages[stage.index], self.schedule(stages, stage),
                                                         self.board)
        return self._resources[key]

    def totals(self, stages: dict) -> dict:
        """{resource: amount} of the whole design (stages and channel FIFOs; as cnnfpga.design.model)."""
        totals = {r: 0 for r in RESOURCES}
        totals["logic"] = segment_port_logic(self.plan)
        for stage in self.plan.stages:
            resources = self.stage_resources(stages, stage)
            for r in RESOURCES:
                totals[r] += getattr(resources, r)
        for name, producer, consumer in self.channels:
            width = stages[producer.index].width_out
            depth = max(channel_depth(self.schedule(stages, producer), self.schedule(stages, consumer)),
                        -(-(self.backlog_values or {}).get(name, 0) // width))
            blocks, logic = memory_cost(self.board, width * storage_bits(producer.precision.outputs), depth)
            totals["ram_blocks"] += blocks
            totals["logic"] += logic
        return totals

    def fits(self, totals: dict) -> bool:
        return all(totals[r] <= self.allowed[r] for r in RESOURCES)

    def cost(self, before: dict, after: dict) -> float:
        """The share of the board a change takes: each resource's increase over what was left of it."""
        total = 0.0
        for r in RESOURCES:
            left = max(self.allowed[r] - before[r], 1e-9)
            total += max(0.0, after[r] - before[r]) / left
        return total

    def valid(self, stages: dict) -> bool:
        try:
            for stage in self.plan.stages:
                kind(stage).check(stage, stages[stage.index])
        except DesignError:
            return False
        return True

    # -- designs ---------------------------------------------------------------------------------
    def design(self, stages: dict) -> Design:
        design = Design(self.plan, stages, board=self.board)
        size_channels(design)
        return design

    def evaluate(self, stages: dict):
        return evaluate(self.design(stages), self.board, self.batch, self.fmax, self.host_seconds)

    def smallest(self) -> dict:
        stages = {stage.index: StageDesign(stage.index, stage.kind, 1, 1) for stage in self.plan.stages}
        stages = self.with_load_widths(stages)
        for stage in self.plan.stages:
            if stage.kind == "conv":
                stages = self.starting_parallelism(stages, stage)
        return stages

    def starting_parallelism(self, stages: dict, stage) -> dict:
        """The (ci, co, f) of the smallest product >= START_PRODUCT (or the largest there is) whose
        weight memory takes the fewest RAM blocks."""
        cs = conv.shape(stage)
        combos = [(ci * co * f, ci, co, f) for ci in divisors(cs.cg) for co in divisors(cs.og)
                  for f in conv.position_choices(cs)]
        products = sorted({c[0] for c in combos})
        product = next((p for p in products if p >= START_PRODUCT), products[-1])
        options = []
        for _, ci, co, f in (c for c in combos if c[0] == product):
            trial = {**stages, stage.index: replace(stages[stage.index], ci=ci, co=co, f=f)}
            if self.valid_stage(trial, stage):
                blocks = self.stage_resources(trial, stage).detail["weight_memory"]["ram_blocks"]
                options.append((blocks, -co, ci, trial))
        return min(options, key=lambda o: o[:3])[3] if options else stages

    def valid_stage(self, stages: dict, stage) -> bool:
        try:
            kind(stage).check(stage, stages[stage.index])
        except DesignError:
            return False
        return True

    def with_load_widths(self, stages: dict) -> dict:
        """Share the DDR bandwidth among the stages that load weights or tables, by their size: they
        all finish together."""
        stages = dict(stages)
        for index, width in widths_by_size(self.loads(), self.ddr_bytes_per_cycle).items():
            stages[index] = replace(stages[index], load_width=max(1, width))
        return stages

    def loads(self) -> dict:
        """{stage index: (values it loads at a launch, bytes per value)}"""
        loads = {}
        for stage in self.plan.stages:
            if stage.kind == "conv":
                cs = conv.shape(stage)
                loads[stage.index] = (cs.o * cs.cg * cs.positions, storage_bits(stage.precision.weights) // 8)
            elif stage.kind == "lrn" and kind(stage).table_length(stage):
                loads[stage.index] = (kind(stage).table_length(stage), 4)
        return loads

    @property
    def ddr_bytes_per_cycle(self) -> float:
        return self.board.ddr_gbs * 1e9 / (self.fmax * 1e6)

    def with_loads_by_need(self, stages: dict) -> dict:
        """Step 4, for the latency of a launch: a stage loads its weights before it reads, and a later
        stage's first input comes long after the launch, so it needs only the share of the DDR bandwidth
        that loads them by then (LOAD_SLACK earlier); the first stages of the segments, which need
        theirs at once, share the rest by size.  Kept where the needs fit in the bandwidth and no
        stage streams its weights from DDR during the images (that stream needs its share all along)."""
        if any(sd.weights == "ddr" for sd in stages.values()):
            return stages
        design = self.design(stages)
        first_input = {}
        for segment in self.plan.segments:
            first_input.update(first_input_cycles(design, segment))
        loads = self.loads()
        widths, urgent = {}, {}
        for index, (values, size) in loads.items():
            deadline = first_input.get(index, 0) * LOAD_SLACK
            if deadline >= 1:
                widths[index] = min(MAX_LOAD_WIDTH, max(1, -(-values // int(deadline))))
            else:
                urgent[index] = (values, size)
        left = self.ddr_bytes_per_cycle - sum(widths[i] * loads[i][1] for i in widths)
        if urgent and left > 0:
            widths.update({index: min(MAX_LOAD_WIDTH, width) for index, width in widths_by_size(urgent, left).items()})
        elif urgent:
            return stages
        if any(width < 1 for width in widths.values()):
            return stages
        return {index: replace(sd, load_width=widths.get(index, sd.load_width)) for index, sd in stages.items()}

    def objective_value(self, evaluation) -> float:
        if self.objective == "latency":
            return evaluation.fpga_cycles
        return evaluation.interval_cycles + sum(cost.schedule.launch_cycles for cost in evaluation.stages) / self.batch

    # -- step 1: something that fits -------------------------------------------------------------
    def fit_smallest(self) -> dict:
        stages = self.smallest()
        if self.backlog_values is None:     # first estimated from the smallest design (balance may refine it)
            self.backlog_values = backlog_values(Design(self.plan, stages, board=self.board))
        totals = self.totals(stages)
        while not self.fits(totals):
            on_chip = [stage for stage in self.plan.stages
                       if stage.kind == "conv" and stages[stage.index].weights == "chip"]
            weight_blocks = {stage.index: self.stage_resources(stages, stage).detail["weight_memory"]["ram_blocks"]
                             for stage in on_chip}
            better = None
            for stage in sorted(on_chip, key=lambda s: (-weight_blocks[s.index], s.index)):
                trial = {**stages, stage.index: replace(stages[stage.index], weights="ddr")}
                trial_totals = self.totals(trial)
                if trial_totals["ram_blocks"] < totals["ram_blocks"]:
                    better = (trial, trial_totals)
                    break
            if better is None:
                raise DesignError(does_not_fit(self.evaluate(stages), self.max_util))
            stages, totals = better
        return stages

    # -- step 2: the slowest stages, as fast as resources allow ----------------------------------
    def faster(self, stages: dict, stage) -> list:
        """Changes that may make `stage` faster (designs still to be checked)."""
        window = self.schedule(stages, stage).window
        streamed_weights = stage.kind == "conv" and stages[stage.index].weights == "ddr"
        # reading limits a window stage whose row phases are longer than its computing; a stage
        # holding whole images reads and writes them in phases of their own
        reading_limits = streamed_weights or (window is not None and window.row_iters > window.row_steps)
        moves = []
        if streamed_weights:
            moves.append({**stages, stage.index: replace(stages[stage.index], weights="chip")})
        if stage.index in self.group_of_input and (reading_limits or stage.kind != "conv"):
            moves += self.wider(stages, self.group_of_input[stage.index])
        if streamed_weights and stage.index in self.group_of_output:
            moves += self.wider(stages, self.group_of_output[stage.index])
        if stage.kind == "conv":
            moves += self.more_parallel(stages, stage)
        return moves

    def wider(self, stages: dict, group: WidthGroup) -> list:
        now = group.width(stages)
        return [set_width(stages, group, width) for width in width_choices(group, stages) if width > now]

    def more_parallel(self, stages: dict, stage) -> list:
        """For each number of kernel positions per step F, the next few larger products ci x co x F
        (every (ci, co) of each); narrow fixed-point multiplies also in logic instead of DSP blocks."""
        cs = conv.shape(stage)
        sd = stages[stage.index]
        now = sd.ci * sd.co * sd.f
        bits = conv.multiplier_bits(stage)
        in_logic = [False] + ([True] if bits is not None and bits <= self.board.dsp.logic_multiplier_max_bits else [])
        moves = []
        for f in conv.position_choices(cs):
            products = {}
            for ci in divisors(cs.cg):
                for co in divisors(cs.og):
                    if ci * co * f > now:
                        products.setdefault(ci * co * f, []).append((ci, co))
            for product in sorted(products)[:PARALLELISM_STEPS]:
                for ci, co in products[product]:
                    for logic in in_logic:
                        trial = {**stages, stage.index: replace(sd, ci=ci, co=co, f=f, logic_multipliers=logic)}
                        trial = self.output_width_for(trial, stage)
                        if trial is not None:
                            moves.append(trial)
        return moves

    def output_width_for(self, stages: dict, stage):
        """Keep the conv's output stream valid for its new co: the same width if it still works,
        else the narrowest valid one wider."""
        group = self.group_of_output.get(stage.index)
        sd = stages[stage.index]
        widths = [sd.width_out] + ([w for w in width_choices(group, stages) if w > sd.width_out] if group else [])
        for width in widths:
            trial = set_width(stages, group, width) if group else stages
            try:
                conv.check(stage, trial[stage.index])
            except DesignError:
                continue
            return trial
        return None

    def best_change(self, stages: dict, stage):
        """Of the changes that make `stage` faster and fit, the most cycles saved per share of the board."""
        cycles = self.schedule(stages, stage).image_cycles
        before = self.totals(stages)
        best, best_score = None, 0.0
        for trial in self.faster(stages, stage):
            if not self.valid(trial):
                continue
            saved = cycles - self.schedule(trial, stage).image_cycles
            if saved <= 0:
                continue
            after = self.totals(trial)
            if not self.fits(after):
                continue
            score = saved / max(self.cost(before, after), 1e-6)
            if score > best_score:
                best, best_score = trial, score
        return best

    def balance(self, stages: dict) -> dict:
        """Speed the slowest stages up until none can be; then give back what faster stages do not
        need (trim) and try again, while that makes the slowest stage faster."""
        stages = self.speed_up(stages)
        while True:
            slowest = self.segment_bottlenecks(stages)
            trimmed = self.speed_up(self.trim(stages))
            if self.segment_bottlenecks(trimmed) >= slowest:
                return stages
            stages = trimmed

    def segment_bottlenecks(self, stages: dict) -> list:
        return [max(self.schedule(stages, s).image_cycles for s in segment.stages) for segment in self.plan.segments]

    def trim(self, stages: dict) -> dict:
        """Every stage at its cheapest parallelism that keeps it within its segment's slowest stage's
        cycles (convolutions: every (ci, co, f); others: their stream width)."""
        for segment, limit in zip(self.plan.segments, self.segment_bottlenecks(stages)):
            for stage in segment.stages:
                options = []
                for trial in self.cheaper(stages, stage):
                    if self.valid(trial) and all(self.schedule(trial, s).image_cycles <= limit for s in segment.stages):
                        options.append((sum(self.totals(trial).values()), trial))
                if options:
                    stages = min(options, key=lambda option: option[0])[1]
        return stages

    def cheaper(self, stages: dict, stage) -> list:
        sd = stages[stage.index]
        if stage.kind != "conv":
            group = self.group_of_input.get(stage.index)
            return [set_width(stages, group, w) for w in width_choices(group, stages)
                    if w < group.width(stages)] if group else []
        cs = conv.shape(stage)
        now = sd.ci * sd.co * sd.f
        trials = []
        for ci in divisors(cs.cg):
            for co in divisors(cs.og):
                for f in conv.position_choices(cs):
                    if ci * co * f < now:
                        trial = self.output_width_for({**stages, stage.index: replace(sd, ci=ci, co=co, f=f)}, stage)
                        if trial is not None:
                            trials.append(trial)
        return trials

    def speed_up(self, stages: dict) -> dict:
        done = set()    # segments whose slowest stage cannot be made faster
        while True:
            bottlenecks = []
            for i, segment in enumerate(self.plan.segments):
                slowest = max(segment.stages, key=lambda s: (self.schedule(stages, s).image_cycles, -s.index))
                bottlenecks.append((self.schedule(stages, slowest).image_cycles, i, slowest))
            # a segment whose slowest stage is a sliver of an image's time is not worth resources
            total = sum(cycles for cycles, _, _ in bottlenecks)
            bottlenecks = [b for b in bottlenecks if b[1] not in done and b[0] >= MINOR_SEGMENT * total]
            if not bottlenecks:
                return stages
            _, segment, stage = max(bottlenecks, key=lambda b: (b[0], -b[1]))
            better = self.best_change(stages, stage)
            if better is None:
                done.add(segment)
            else:
                stages = better

    # -- step 3: latency --------------------------------------------------------------------------
    def shorten_latency(self, stages: dict) -> dict:
        best = self.objective_value(self.evaluate(stages))
        for _ in range(LATENCY_MOVES):
            candidates = []
            for stage in self.plan.stages:
                change = self.best_change(stages, stage)
                if change is not None:
                    value = self.objective_value(self.evaluate(change))
                    if value < best * (1 - LATENCY_GAIN):
                        candidates.append((value, stage.index, change))
            if not candidates:
                break
            best, _, stages = min(candidates, key=lambda c: (c[0], c[1]))
        return stages


def widths_by_size(loads: dict, bytes_per_cycle: float) -> dict:
    """{stage index: values per cycle} for `loads` ({index: (values, bytes per value)}) sharing
    `bytes_per_cycle` in proportion to the bytes each loads, so that they all finish together (a width
    may round down to 0)."""
    total_bytes = sum(values * size for values, size in loads.values())
    return {index: int(bytes_per_cycle * values * size / total_bytes / size) for index, (values, size) in loads.items()}


def capacity(board, resource: str) -> int:
    return {"dsp": board.dsp.blocks, "ram_blocks": board.ram.blocks, "logic": board.logic.count}[resource]


def how_many_more(needed: float, allowed: float) -> str:
    ratio = needed / allowed
    return f"{ratio:.1f} times as many" if ratio >= 1.5 else f"{ratio - 1:.0%} more"


def does_not_fit(evaluation, max_util: float) -> str:
    used = evaluation.utilisation()
    binding = max(used, key=lambda r: used[r])
    allowed = max_util * evaluation.capacity(binding)
    needed = getattr(evaluation.totals, binding)
    worst = max(evaluation.stages, key=lambda cost: getattr(cost.resources, binding))
    names = {"dsp": evaluation.board.dsp.unit + "s", "ram_blocks": evaluation.board.ram.unit + " blocks",
             "logic": evaluation.board.logic.unit + "s"}
    return (f"the design does not fit on {evaluation.board.name} even at its smallest (every convolution at most "
            f"{START_PRODUCT} multiplies per step, streams one value wide, weights streamed from DDR where that saves "
            f"RAM): it needs {needed:,} {names[binding]} where {allowed:,.0f} are allowed ({max_util:.0%} of "
            f"{evaluation.capacity(binding):,}), {how_many_more(needed, allowed)}; the largest user is "
            f"'{worst.stage.name}' with {getattr(worst.resources, binding):,}")


def balance(plan, board, batch: int = 1, objective: str = "latency", max_util: float = 0.85,
            fmax_mhz: float = None, host_seconds: float = 0.0) -> Design:
    """The design of `plan` for `board` (see the module docstring)."""
    search = Search(plan, board, batch, objective, max_util, fmax_mhz, host_seconds)
    # the FIFOs on the loops of forked streams hold what the pipeline model finds waiting there, which
    # depends on the design: estimated from the smallest one (fit_smallest); where the balanced design's
    # FIFOs then take more than the cap allows, balanced again with what they need (at most
    # BACKLOG_ROUNDS times)
    for _ in range(BACKLOG_ROUNDS):
        stages = search.balance(search.fit_smallest())
        if objective == "latency":
            stages = search.shorten_latency(stages)
        stages = search.with_loads_by_need(stages)
        design = search.design(stages)
        search.backlog_values = {name: max(values, search.backlog_values.get(name, 0))
                                 for name, values in backlog_values(design).items()}
        totals = search.totals(stages)
        if search.fits(totals):
            design.check()
            return design
    binding = max(RESOURCES, key=lambda r: totals[r] / capacity(board, r))
    raise DesignError(f"{plan.graph.path}: the balanced design's channel FIFOs on forked streams take more than the "
                      f"cap allows ({binding}: {totals[binding] / capacity(board, binding):.0%} after {BACKLOG_ROUNDS} "
                      f"rounds); cut it into more partitions")


def backlog_values(design) -> dict:
    """{channel name: values waiting in it} on the loops of forked streams (model.channel_backlogs)."""
    widths = {name: design.of(producer).width_out for segment in design.plan.segments
              for name, producer, _, _ in channels(segment)}
    return {name: words * widths[name] for name, words in channel_backlogs(design).items()}
