"""Designs beyond one program: the device stages split into partitions, each its own program
(bitstream) with its own balanced parallelism, either

- on one board in turn (``fpgas=1``): each partition runs the whole batch, its output goes to DDR,
  and the board is reconfigured for the next partition (the board file's reconfiguration_s is
  charged per switch, so a larger batch amortises it), or
- on a chain of boards in series (``fpgas`` = the number of partitions): each partition on its own
  board, all running at once, the stream between them over the board-to-board link.

A partition is a run of consecutive device stages in plan order; it starts a new segment where it
cuts a segment's streams (placement.cut_at: every stream crossing the cut goes through DDR).  Each partition is balanced on its own (cnnfpga.design.balance)
with the whole board to itself.  Where the cuts go:

- a number of partitions: the cuts that split the convolutions' multiply-accumulates most evenly
  (each cut where the fewest values cross it among those splitting as evenly), every
  partition fitting the board at its smallest;
- "auto": the fewest partitions that fit (each grown while it still fits at its smallest, with and
  without giving convolutions that reload their weights more passes to share a program), then up to
  three partitions more than the fewest without, evenly cut, the objective's best kept (a count
  whose reconfigurations alone take longer than the best so far is not tried).

On one board, a convolution too large for it even on its own reloads its weights (fpgaConvNet's
weights reloading): it keeps a share of its filters on chip and runs in passes, each reading its
input from DDR again (with_reloading, placement.reload_filters).
"""
from __future__ import annotations

import math

from ..errors import DesignError
from ..placement import cut_at, reload_filters
from . import Design
from .balance import Search, balance
from .model import evaluate, stage_macs
from .stage import divisors

MORE_PARTITIONS_TRIED = 3     # "auto": partition counts tried beyond the fewest that fit
MORE_PASSES = 4               # reloading convolutions take up to 4 times their fewest passes to share a program


def stage_groups(plan, starts) -> list:
    """The stages of each partition (lists, plan order) for partitions starting at `starts`."""
    groups = [[]]
    for stage in plan.stages:
        if stage.index in starts and groups[-1]:
            groups.append([])
        groups[-1].append(stage)
    return groups


def misfit(plan, stages, board, max_util: float) -> str:
    """Why a partition of `stages` does not fit under the cap even at its smallest design ("" where it fits)."""
    order = [s.index for s in plan.stages]
    cut = cut_at(plan, [stages[0].index, *order[order.index(stages[-1].index) + 1:][:1]])
    search = Search(cut.only(stage.index for stage in stages), board, 1, "throughput", max_util, None, 0.0)
    try:
        search.fit_smallest()
    except DesignError as error:
        return str(error)
    return ""


def with_reloading(plan, board, max_util: float):
    """`plan` with every ungrouped convolution that does not fit the board on its own, even at its
    smallest, computing its filters in the fewest passes that make it fit (weights reloading:
    placement.reload_filters); the other stages as they were."""
    for index in [stage.index for stage in plan.stages if stage.kind == "conv" and stage.spec.group == 1]:
        stage = plan.stage(index)
        if not misfit(plan, [stage], board, max_util):
            continue
        for passes in divisors(stage.out_shape[1])[1:]:
            trial = reload_filters(plan, index, passes)
            if not misfit(trial, [trial.stage(index)], board, max_util):
                plan = trial
                break
    return plan


def crossing_values(plan) -> list:
    """For each stage (plan order), the values per image of the streams a cut before it sends through DDR:
    what the stages before it in its segment write and it or later ones read (several where branches
    run beside each other; the stage's input where the segment is a chain)."""
    values = []
    for segment in plan.segments:
        written = {}
        for k, stage in enumerate(segment.stages):
            read_later = {key for later in segment.stages[k:] for key in later.inputs}
            values.append(sum(count for key, count in written.items() if key in read_later) or
                          math.prod(stage.in_shape[1:]))
            written[stage.output] = math.prod(stage.out_shape[1:]) * stage.passes
    return values


def even_starts(plan, count: int) -> list:
    """The first stages of partitions 2..count that split the convolutions' MACs most evenly; among
    equally even cuts, the one sending the fewest values through DDR (crossing_values)."""
    stages = plan.stages
    if not 1 <= count <= len(stages):
        raise DesignError(f"{count} partition(s) asked for, but the net has {len(stages)} device stage(s)")
    total = sum(stage_macs(s) for s in stages) or 1
    prefix, done = [], 0
    for stage in stages:
        prefix.append(done)             # MACs before this stage
        done += stage_macs(stage)
    crossing = crossing_values(plan)
    starts, last = [], 0
    for k in range(1, count):
        target = total * k / count
        options = range(last + 1, len(stages) - (count - 1 - k))
        best = min(options, key=lambda i: (abs(prefix[i] - target), crossing[i], i))
        starts.append(stages[best].index)
        last = best
    return starts


def with_more_passes(plan, indices: list, board, max_util: float, fewest: dict):
    """`plan` with the convolutions among stages `indices` that reload their weights in more passes
    (doubled, up to MORE_PASSES times their fewest, `fewest` {index: passes}) so that the stages fit one
    program together; None where that does not make them fit."""
    reloading = [index for index in indices if plan.stage(index).passes > 1]
    while True:
        grown = plan
        for index in reloading:
            stage = grown.stage(index)
            if stage.out_shape[1] % 2 == 0 and 2 * stage.passes <= MORE_PASSES * fewest[index]:
                grown = reload_filters(grown, index, 2 * stage.passes)
        if grown is plan:
            return None
        plan = grown
        if not misfit(plan, [plan.stage(index) for index in indices], board, max_util):
            return plan


def fewest_starts(plan, board, max_util: float, pack: bool = False) -> tuple:
    """(plan, first stages of partitions 2..): partitions grown stage by stage while each still fits at
    its smallest.  pack: where a stage does not fit beside a partition with convolutions reloading
    their weights, give them more passes if that makes room (with_more_passes) -- fewer
    reconfigurations (about a second each) for more reads of their inputs."""
    starts, current = [], []
    fewest = {stage.index: stage.passes for stage in plan.stages}
    for index in [stage.index for stage in plan.stages]:
        if current:
            joined = current + [index]
            if misfit(plan, [plan.stage(i) for i in joined], board, max_util):
                packed = with_more_passes(plan, joined, board, max_util, fewest) if pack else None
                if packed is None:
                    starts.append(index)
                    current = []
                else:
                    plan = packed
        current.append(index)
        stage = plan.stage(index)
        reason = misfit(plan, [stage], board, max_util) if len(current) == 1 else ""
        if reason:
            raise DesignError(f"{stage.layer.where}: '{stage.name}' alone does not fit, and a partition cannot "
                              f"hold less than one layer: {reason}")
    return plan, starts


def partitioned(plan, board, starts: list, fpgas: int, batch: int = 1, objective: str = "latency",
                max_util: float = 0.85, fmax_mhz: float = None, host_seconds: float = 0.0) -> Design:
    """The design of `plan` in partitions starting at `starts`, each balanced on its own board."""
    cut = cut_at(plan, starts)
    groups = stage_groups(cut, set(starts))
    if fpgas not in (1, len(groups)):
        raise DesignError(f"{len(groups)} partitions go on one board in turn or on {len(groups)} boards, not {fpgas}")
    stages, depths = {}, {}
    for group in groups:
        part = balance(cut.only(s.index for s in group), board, batch, objective, max_util, fmax_mhz, host_seconds)
        stages.update(part.stages)
        depths.update(part.channel_depths)
    design = Design(cut, stages, depths, board, tuple(tuple(s.index for s in group) for group in groups), fpgas)
    design.check()
    return design


def objective_seconds(design, board, batch: int, objective: str, fmax_mhz, host_seconds) -> float:
    evaluation = evaluate(design, board, batch, fmax_mhz, host_seconds)
    return evaluation.fpga_seconds if objective == "latency" else evaluation.fpga_seconds / batch


def design_partitions(plan, board, partitions, fpgas: int = 1, batch: int = 1, objective: str = "latency",
                      max_util: float = 0.85, fmax_mhz: float = None, host_seconds: float = 0.0) -> Design:
    """A partitioned design: `partitions` a count or "auto" (see the module docstring); `fpgas` 1 (one
    board, reconfigured) or the number of partitions (a chain).  On one board, a convolution that does
    not fit it on its own reloads its weights in passes (with_reloading); a board of a chain holds its
    partition for good, so there it does not fit."""
    if fpgas == 1:
        plan = with_reloading(plan, board, max_util)
    if partitions == "auto":
        # the fewest partitions grown stage by stage: with reloading convolutions packed beside others
        # in more passes, and without
        grown = {}
        for pack in (True, False) if any(stage.passes > 1 for stage in plan.stages) else (False,):
            grown_plan, starts = fewest_starts(plan, board, max_util, pack)
            grown.setdefault(len(starts) + 1, (grown_plan, starts))
        counts = range(min(grown), min(len(plan.stages), max(grown) + MORE_PARTITIONS_TRIED) + 1)
        if fpgas > 1:
            counts = [fpgas]
        designs, refusals = [], []
        for count in counts:
            # the reconfigurations alone take longer than the best design so far: more partitions only add
            floor = count * board.reconfiguration_s / (1 if objective == "latency" else batch)
            if fpgas == 1 and count > 1 and designs and floor >= min(d[0] for d in designs):
                break
            # the even cut, and the grown one where it differs (the even cut may not fit where the grown one does)
            options = [(plan, even_starts(plan, count))]
            if count in grown and (grown[count][0] is not plan or grown[count][1] != options[0][1]):
                options.append(grown[count])
            for option_plan, starts in options:
                try:
                    design = partitioned(option_plan, board, starts, fpgas, batch, objective, max_util, fmax_mhz,
                                         host_seconds)
                except DesignError as error:
                    refusals.append(f"{count} partition(s): {error}")
                    continue
                designs.append((objective_seconds(design, board, batch, objective, fmax_mhz, host_seconds),
                                count, design))
        if not designs:
            raise DesignError(f"no partitioning of {plan.graph.path} fits {board.name}: " + "; ".join(refusals))
        return min(designs, key=lambda d: d[:2])[2]
    return partitioned(plan, board, even_starts(plan, partitions), fpgas, batch, objective, max_util, fmax_mhz,
                       host_seconds)


def pays_from_batch(single, split, board, fmax_mhz=None) -> int:
    """The smallest batch at which `split` (partitions on one board, reconfigured) takes less time per
    image than `single`, or 0 where it never does (its time per image is not shorter).  A batch's
    cycles grow linearly with the batch past the first image, so two batch sizes fix both lines."""
    def line(design):
        one, two = (evaluate(design, board, b, fmax_mhz) for b in (1, 2))
        slope = two.fpga_seconds - one.fpga_seconds
        return one.fpga_seconds - slope, slope      # seconds = fixed + slope * batch
    fixed_single, per_single = line(single)
    fixed_split, per_split = line(split)
    if per_split >= per_single:
        return 0
    return max(1, math.floor((fixed_split - fixed_single) / (per_single - per_split)) + 1)
