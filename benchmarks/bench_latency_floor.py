"""How short can one image's latency be in a layer pipeline?  A lower bound against the balanced design.

    python benchmarks/bench_latency_floor.py [--net alexnet.prototxt] [--board arria10_gx1150]
                                             [--precision fixed16] [--fmax 250] [--max-util 0.85] [--fpgas 1]

In a layer pipeline each convolution is its own stage with its own multipliers, and the image
streams through row by row.  A convolution cannot start before the first convolution has written
the rows its first output row needs (its receptive field through the layers between them), so for
an allocation of m_1, m_2, ... multipliers:

    latency >= s_i + W_i / m_i   for every convolution i,   s_i = phi_i * W_1 / m_1

where W_i is the layer's multiply-accumulates and phi_i the share of the first convolution's output
rows that stage i's first output row needs.  Everything else (pooling, LRN, the other convolutions'
own delays, the kernels' row phases, weight loading) is left out, so this is a floor no design of
that kind goes under.  The script finds the smallest latency for which some allocation within the
board's multipliers meets every inequality (bisection on the latency, a search over m_1), and
prints it beside the balanced design's interval (time per image in a stream) and latency (one image
through the pipeline, as cnnfpga.design.model predicts it).  With --fpgas N the multipliers of N
boards are pooled as if on one (a chain can only do worse: each board has its own, and the link
adds its latency), and the design compared is the chain cnnfpga.design.partitions makes.
"""
import argparse
import math
import warnings

from cnnfpga import bundled
from cnnfpga.design.balance import balance
from cnnfpga.design.boards import load_board, multipliers_per_block
from cnnfpga.design.model import evaluate, operand_bits, stage_macs
from cnnfpga.design.partitions import design_partitions
from cnnfpga.graph import load_graph
from cnnfpga.placement import place


def rows_needed(stage, rows: int) -> int:
    """Input rows a stage needs for its first `rows` output rows."""
    spec, height = stage.spec, stage.in_shape[2]
    if stage.kind == "conv":
        window, stride, pad = (spec.kernel_h - 1) * spec.dilation_h + 1, spec.stride_h, spec.pad_h
    elif stage.kind == "pool":
        window, stride, pad = spec.kernel_h, spec.stride_h, spec.pad_h
    elif stage.kind == "lrn" and spec.region == "WITHIN_CHANNEL":
        window, stride, pad = spec.local_size, 1, (spec.local_size - 1) // 2
    else:
        return rows
    return min(height, max(1, (rows - 1) * stride - pad + window))


def receptive_shares(segment) -> tuple:
    """(the segment's first convolution, [(stage, W, phi) for every convolution after it])."""
    convs = [k for k, stage in enumerate(segment.stages) if stage.kind == "conv"]
    first = convs[0]
    out = []
    for k in convs[1:]:
        rows = 1
        for stage in reversed(segment.stages[first + 1:k + 1]):
            rows = rows_needed(stage, rows)
        out.append((segment.stages[k], segment.stages[k].layer.macs, rows / segment.stages[first].out_shape[2]))
    return segment.stages[first], out


def floor_cycles(first_macs: float, rest: list, multipliers: float) -> float:
    """The smallest latency (cycles) some allocation of `multipliers` allows (see the docstring)."""
    def needed(latency: float) -> float:
        """The fewest multipliers meeting every inequality at `latency`: a search over m_1."""
        best = math.inf
        low = first_macs / latency
        for step in range(1, 4001):
            m1 = low * (1 + step / 400)
            total = m1
            for _, macs, share in rest:
                left = latency - share * first_macs / m1
                if left <= 0:
                    total = math.inf
                    break
                total += macs / left
            best = min(best, total)
        return best
    low, high = 1.0, 1e12
    while high / low > 1.0001:
        mid = math.sqrt(low * high)
        low, high = (mid, high) if needed(mid) > multipliers else (low, mid)
    return high


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="alexnet.prototxt")
    parser.add_argument("--board", default="arria10_gx1150")
    parser.add_argument("--precision", default="fixed16")
    parser.add_argument("--fmax", type=float, default=250.0)
    parser.add_argument("--max-util", type=float, default=0.85)
    parser.add_argument("--fpgas", type=int, default=1)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        graph = load_graph(bundled.resolve(args.net), None)
        graph = graph.reshape({name: (1,) + tuple(shape[1:]) for name, shape in graph.inputs.items()})
        plan = place(graph, args.precision)
    board = load_board(args.board)
    segment = max(plan.segments, key=lambda s: sum(stage_macs(stage) for stage in s.stages))
    first, rest = receptive_shares(segment)
    multipliers = args.fpgas * args.max_util * board.dsp.blocks * multipliers_per_block(board, operand_bits(first))
    macs = first.layer.macs + sum(m for _, m, _ in rest)
    print(f"{args.net} on {args.fpgas} x {board.name}, {args.precision}, {args.fmax:g} MHz, {multipliers:,.0f} multipliers "
          f"({args.max_util:.0%} of the DSP blocks)")
    print(f"  {first.name}: {first.layer.macs / 1e6:.0f} M MACs")
    for stage, macs_of_stage, share in rest:
        print(f"  {stage.name}: {macs_of_stage / 1e6:.0f} M MACs, starts after {share:.0%} of {first.name}'s rows")
    ms = 1e-3 * args.fmax * 1e6
    interval_floor = macs / multipliers
    latency_floor = floor_cycles(first.layer.macs, rest, multipliers)
    if args.fpgas > 1:
        design = design_partitions(plan, board, args.fpgas, args.fpgas, fmax_mhz=args.fmax, max_util=args.max_util)
    else:
        design = balance(plan, board, fmax_mhz=args.fmax, max_util=args.max_util)
    evaluation = evaluate(design, board, 1, args.fmax)
    print(f"interval floor (every multiplier busy on every image): {interval_floor:,.0f} cycles, "
          f"{interval_floor / ms:.3f} ms")
    print(f"latency floor of one image through a layer pipeline:   {latency_floor:,.0f} cycles, "
          f"{latency_floor / ms:.3f} ms ({latency_floor / interval_floor:.2f} x the interval floor)")
    print(f"balanced design (cnnfpga.design): interval {evaluation.interval_cycles:,} cycles "
          f"({evaluation.interval_cycles / ms:.3f} ms), latency {evaluation.fpga_cycles:,.0f} cycles "
          f"({evaluation.fpga_cycles / ms:.3f} ms, {evaluation.fpga_cycles / latency_floor:.2f} x the floor)")


if __name__ == "__main__":
    main()
