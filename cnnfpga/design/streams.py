"""The streams of a plan's segments as the design sees them: the channels between stages, and the
groups of streams that must share one word width.

A channel carries one producer's words to one consumer; a stream read by several stages forks into a
channel each, all as wide as the producer writes.  A stage other than a convolution writes words as
wide as it reads, and a sum or a concat reads all its inputs in words of one width -- so the streams
from one convolution's output (or a segment's DDR inputs) through pooling, ReLU, LRN, sums and
concats to the next convolutions' inputs form a group of one width, a WidthGroup.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


def channels(segment) -> list:
    """(name, producer, consumer, input position) of every channel of a segment, in stage order; a stage
    reading one producer twice (x + x) gets a channel for each."""
    found, names = [], set()
    for producer, consumer, position in segment.edges():
        name = f"ch_{producer.index}_{consumer.index}"
        if name in names:
            name += f"_{position}"
        names.add(name)
        found.append((name, producer, consumer, position))
    return found


@dataclass
class WidthGroup:
    """Streams that must share one width: what convolutions (`producers`) write, the stages between
    (`members`: their words are as wide in as out, a sum's or a concat's inputs all one width) and the
    inputs of the convolutions reading it (`consumers`).  Without producers it starts from DDR."""
    producers: list = field(default_factory=list)
    members: list = field(default_factory=list)
    consumers: list = field(default_factory=list)

    @property
    def channels(self) -> int:
        """The largest count that divides every stream's channels: widths dividing it pad nothing."""
        counts = [p.out_shape[1] for p in self.producers] + [c.in_shape[1] for c in self.consumers]
        counts += [c for m in self.members for c in (m.in_shape[1], m.out_shape[1], *(s[1] for s in m.side_shapes))]
        return math.gcd(*counts)

    def width(self, stages: dict) -> int:
        if self.producers:
            return stages[self.producers[0].index].width_out
        return stages[(self.members or self.consumers)[0].index].width_in


def width_groups(plan) -> list:
    """The WidthGroups of a plan, each stream in exactly one."""
    parent = {}

    def find(node):
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    def union(a, b):
        parent[find(a)] = find(b)

    for segment in plan.segments:
        for stage in segment.stages:
            find(("in", stage.index))
            find(("out", stage.index))
            if stage.kind != "conv":
                union(("in", stage.index), ("out", stage.index))
        for _, producer, consumer, _ in channels(segment):
            union(("out", producer.index), ("in", consumer.index))
    groups = {}
    for stage in plan.stages:
        if stage.kind == "conv":
            groups.setdefault(find(("in", stage.index)), WidthGroup()).consumers.append(stage)
            groups.setdefault(find(("out", stage.index)), WidthGroup()).producers.append(stage)
        else:
            groups.setdefault(find(("in", stage.index)), WidthGroup()).members.append(stage)
    return list(groups.values())


def set_width(stages: dict, group: WidthGroup, width: int) -> dict:
    """A copy of the stage designs with every stream of `group` `width` values wide."""
    stages = dict(stages)
    for producer in group.producers:
        stages[producer.index] = replace(stages[producer.index], width_out=width)
    for member in group.members:
        stages[member.index] = replace(stages[member.index], width_in=width, width_out=width)
    for consumer in group.consumers:
        stages[consumer.index] = replace(stages[consumer.index], width_in=width)
    return stages
