"""Show a net's layers: output shapes, multiply-accumulates, parameters, and where each would run.

    cnnfpga info --net googlenet.prototxt [--weights W.caffemodel] [--precision fixed16] [--json]

"runs on" is the placement the OpenCL backend uses: a device stage (from DDR or streamed from the stage
before), fused into a stage, or the host CPU and why. Needs no OpenCL device.
"""
import json
import os
import sys
import warnings

from . import bundled
from .cli import module_main
from .graph import load_graph
from .placement import HostStep, place


def add_arguments(parser):
    parser.add_argument("--net", required=True, help="prototxt path, or a bundled net's name (e.g. alexnet.prototxt)")
    parser.add_argument("--weights", help="caffemodel (default: a bundled net's weights, else fillers); the counts "
                                          "need none")
    parser.add_argument("--precision", default="float", help="the precision the placement assumes (default float)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")


def where_each_runs(plan) -> dict:
    """{layer name: where it runs} for every layer the plan covers."""
    where = {}
    for step in plan.steps:
        if isinstance(step, HostStep):
            where[step.layer.name] = f"host ({step.reason})"
            continue
        for k, stage in enumerate(step.stages):
            where[stage.name] = f"device stage {stage.index} ({'from DDR' if k == 0 else 'streamed'})"
            for fused in stage.fused:
                where[fused] = f"fused into stage {stage.index}"
    return where


def net_rows(graph, plan) -> list:
    where = where_each_runs(plan)
    return [{"name": layer.name, "type": layer.type, "output": [list(shape[1:]) for shape in layer.out_shapes],
             "macs": layer.macs, "params": layer.params,
             "runs_on": "input" if layer.type == "Input" else where.get(layer.name, "host")}
            for layer in graph.layers]


def table(rows: list) -> str:
    cells = [("layer", "type", "output (per image)", "MACs", "params", "runs on")]
    cells += [(row["name"], row["type"], " ".join(str(shape) for shape in row["output"]), f"{row['macs']:,}",
               f"{row['params']:,}", row["runs_on"]) for row in rows]
    widths = [max(len(cell[i]) for cell in cells) for i in range(len(cells[0]))]
    right = (False, False, False, True, True, False)   # numbers line up on the right
    lines = ["  ".join(cell.rjust(width) if r else cell.ljust(width) for cell, width, r in zip(row, widths, right))
             .rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run(args) -> int:
    net_path = bundled.resolve(args.net)
    weights = args.weights or bundled.bundled_weights(net_path)
    with warnings.catch_warnings():   # filler and calibration warnings say nothing about the counts
        warnings.simplefilter("ignore", UserWarning)
        graph = load_graph(net_path, weights, fill=weights is not None)   # counts need no filler values
        plan = place(graph, args.precision)
    rows = net_rows(graph, plan)
    devices = sum(1 for row in rows if row["runs_on"].startswith("device"))
    hosts = sum(1 for row in rows if row["runs_on"].startswith("host"))
    summary = {"net": net_path, "inputs": {name: list(shape) for name, shape in graph.inputs.items()},
               "macs": sum(row["macs"] for row in rows), "params": sum(row["params"] for row in rows),
               "device_stages": devices, "device_segments": len(plan.segments), "host_layers": hosts}
    if args.json:
        print(json.dumps({**summary, "layers": rows}, indent=1))
        return 0
    print(table(rows))
    print(f"{os.path.basename(net_path)}: inputs {summary['inputs']}, {summary['macs'] / 1e6:,.1f} M MACs and "
          f"{summary['params'] / 1e6:,.2f} M parameters per image; {devices} device stage(s) in "
          f"{len(plan.segments)} segment(s), {hosts} host layer(s)")
    return 0


def main(argv=None) -> int:
    return module_main(sys.modules[__name__], "python -m cnnfpga.info", argv)


if __name__ == "__main__":
    sys.exit(main())
