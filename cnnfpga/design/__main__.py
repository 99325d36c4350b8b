"""Size an FPGA design for a net and a board, and write it out:

    python -m cnnfpga.design --net alexnet.prototxt --board arria10_gx1150 --precision fixed16 --out alexnet_a10

writes to the --out folder: report.txt (a row per layer: where it runs, parallelism, cycles, DSP,
RAM, logic; totals, the binding resource, the predictions), report.json, design.cl (the aoc source
of exactly this design; design_p1.cl, design_p2.cl, ... for one in partitions), design.json (what
Net(..., backend="opencl", design=FOLDER) and cnnfpga classify --design FOLDER run), a Makefile with
the aoc command, and balance.png (cycles per stage) where matplotlib is installed.
--verify runs the design on an OpenCL device for one image, checks it against the golden model and
adds the cycles every stage counted.
"""
import logging
import math
import os
import sys
import time
import warnings

from .. import bundled, codegen
from ..cli import finite_float, module_main, positive_float, positive_int
from ..errors import DesignError
from ..graph import load_graph
from ..placement import HostStep, place
from ..precision import load_calibration
from . import balance as balancing
from .boards import board_names, load_board
from .model import evaluate
from .partitions import design_partitions, pays_from_batch
from .pareto import explore, pareto_text, plot_pareto
from .report import report_data, report_text, write_report
from .store import save_design

log = logging.getLogger("cnnfpga")


def add_arguments(parser):
    parser.add_argument("--net", required=True, help="prototxt path, or a bundled net's name (alexnet.prototxt)")
    parser.add_argument("--weights", help="caffemodel (default: a bundled net's weights, else seeded fillers); "
                                          "fixed-point weight formats are sized from the weights")
    parser.add_argument("--board", required=True, help=f"a bundled board ({', '.join(board_names())}) or a board "
                                                       f"JSON file")
    parser.add_argument("--precision", default="fixed16",
                        help='float, half, fixed16, fixed8.4, ..., or a JSON file {"layer": form, "*": default}')
    parser.add_argument("--calibration", help="JSON file of {blob: max |x|} (cnnfpga.precision.save_calibration) "
                                              "choosing fixed-point fractional bits")
    parser.add_argument("--batch", type=positive_int, default=1, help="images per launch (default 1)")
    parser.add_argument("--objective", default="latency", choices=balancing.OBJECTIVES + ("pareto",),
                        help="latency (default), throughput, or pareto: designs over several resource caps and "
                             "both objectives, and in 2 and 3 programs, the non-dominated ones listed (pareto.png); "
                             "the fastest is written")
    parser.add_argument("--partitions", type=partition_count,
                        help="split the device stages into this many programs run in turn on one board, which is "
                             "reconfigured between them (each runs the whole batch), or 'auto': the fewest that "
                             "fit, or more where the objective gains (default: one program); a convolution too "
                             "large for the board alone then reloads its weights in passes")
    parser.add_argument("--fpgas", type=positive_int, default=1,
                        help="boards in series: one partition each, streaming to the next over the board-to-board "
                             "link (default 1)")
    parser.add_argument("--max-util", type=finite_float, default=0.85, help="cap on every resource (default 0.85)")
    parser.add_argument("--fmax", type=positive_float, help="clock in MHz (default: the board file's)")
    parser.add_argument("--out", required=True, help="folder to write the design and its report to")
    parser.add_argument("--verify", action="store_true",
                        help="run the design on an OpenCL device and check outputs and cycles")
    parser.add_argument("--device", help="OpenCL device for --verify (name substring or P:D; default as Net's)")


def partition_count(text: str):
    """argparse type of --partitions: a positive count or 'auto'."""
    return "auto" if text == "auto" else positive_int(text)


def host_layer_times(plan, batch: int) -> dict:
    """Seconds of each host inner product at `batch` from the measured host model."""
    from .host_model import load_or_measure
    layers = [step.layer for step in plan.steps if isinstance(step, HostStep) and step.layer.type == "InnerProduct"]
    if not layers:
        return {}
    model = load_or_measure()
    return {layer.name: model.seconds(math.prod(layer.in_shapes[0][layer.spec.axis:]), layer.spec.num_output, batch)
            for layer in layers}


def design_net(args) -> dict:
    net_path = bundled.resolve(args.net)
    weights = args.weights or bundled.bundled_weights(net_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        graph = load_graph(net_path, weights)
        graph = graph.reshape({name: (1,) + tuple(shape[1:]) for name, shape in graph.inputs.items()})
        stats = load_calibration(args.calibration) if args.calibration else None
        plan = place(graph, args.precision, stats)
    for warning in caught:
        print(f"note: {warning.message}", file=sys.stderr)
    board = load_board(args.board)
    start = time.perf_counter()
    host_times = host_layer_times(plan, args.batch)
    log.info("balancing %d device stage(s) of %s on %s ...", len(plan.stages), os.path.basename(net_path), board.name)
    front = None
    host_seconds = sum(host_times.values())
    partitions = args.partitions or (args.fpgas if args.fpgas > 1 else None)
    if args.fpgas > 1 and args.partitions not in (None, args.fpgas):
        raise DesignError(f"--fpgas {args.fpgas} puts one partition on each board: leave --partitions out")
    if args.objective == "pareto" and partitions:
        raise DesignError("--objective pareto explores partitions itself (2 and 3 programs at the cap): leave "
                          "--partitions and --fpgas out")
    if args.objective == "pareto":
        front = explore(plan, board, args.batch, args.max_util, args.fmax, host_seconds)
        design = front[0].design   # the lowest latency; the others are in the report
    elif partitions:
        design = design_partitions(plan, board, partitions, args.fpgas, args.batch, args.objective, args.max_util,
                                   args.fmax, host_seconds)
    else:
        try:
            design = balancing.balance(plan, board, args.batch, args.objective, args.max_util, args.fmax,
                                       host_seconds)
        except DesignError as error:
            raise DesignError(f"{error}; --partitions auto splits the net into programs that each fit "
                              f"(the board reconfigured between them), --fpgas N over N boards") from None
    evaluation = evaluate(design, board, args.batch, args.fmax, host_seconds)
    log.info("designed in %.1f s", time.perf_counter() - start)
    meta = {"net": net_path, "weights": weights, "precision": args.precision, "objective": args.objective,
            "max_util": args.max_util}
    data = report_data(evaluation, meta, {name: seconds * 1e3 for name, seconds in host_times.items()})
    if front is not None:
        data["pareto"] = [p.row() for p in front]
    if len(design.partition_stages()) > 1 and design.fpgas == 1:
        data["partitioning_pays_from_batch"] = partitioning_pays(plan, board, design, args)
    if args.verify:
        from .verify import verify
        log.info("verifying on an OpenCL device (builds the design with loop counters) ...")
        checked = verify(graph, design, args.device)
        data["verified"] = {key: checked[key] for key in ("device", "outputs", "ok", "max_error", "cycles_equal")}
        for row in data["layers"]:
            if row["name"] in checked["measured_cycles"]:
                row["measured_cycles"] = checked["measured_cycles"][row["name"]]
                row["model_cycles"] = checked["model_cycles"][row["name"]]
    written = write_report(args.out, data, codegen.program_sources(design))
    if front is not None and plot_pareto(data["pareto"], f"{os.path.basename(net_path)} on {board.name}",
                                         os.path.join(args.out, "pareto.png")):
        written.append("pareto.png")
    save_design(design, args.out, net_path, {"board": board.name, "fmax_mhz": evaluation.fmax_mhz,
                                             "batch": args.batch, "objective": args.objective,
                                             "precision": args.precision})
    log.info("wrote %s to %s", ", ".join(written + ["design.json"]), args.out)
    return data


def partitioning_pays(plan, board, design, args):
    """The batch from which `design` (partitions on one board) beats the one-program design per image,
    0 where it never does, or None where one program does not fit."""
    try:
        single = balancing.balance(plan, board, args.batch, args.objective, args.max_util, args.fmax)
    except DesignError:
        return None
    return pays_from_batch(single, design, board, args.fmax)


def run(args) -> int:
    data = design_net(args)
    print(report_text(data), end="")
    if "pareto" in data:
        print(pareto_text(data["pareto"], data["batch"]), end="")
    if "verified" in data and not (data["verified"]["ok"] and data["verified"]["cycles_equal"]):
        print("error: verification failed", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return module_main(sys.modules[__name__], "python -m cnnfpga.design", argv)


if __name__ == "__main__":
    sys.exit(main())
