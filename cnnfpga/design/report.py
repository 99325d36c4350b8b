"""What `python -m cnnfpga.design` writes: report.json, report.txt, balance.png and the aoc Makefile."""
from __future__ import annotations

import json
from pathlib import Path

from ..placement import HostStep

ASSUMPTIONS = (
    "Cycles are the kernels' own loop iterations (exact: --verify counts them on an OpenCL device); time "
    "assumes one iteration per cycle (initiation interval 1) at fmax, which only aoc's report can confirm.",
    "DSP blocks and RAM blocks follow from the design and the board file; logic is an estimate from documented "
    "constants (cnnfpga/design/cost.py). The board support package (PCIe, DDR controllers) is not counted: "
    "the resource cap leaves room for it.",
    "Latency: the stages of a segment run at once, each output row as soon as the rows it needs have arrived "
    "(cnnfpga/design/model.py); a launch first loads every stage's weights over the shared DDR bandwidth.",
    "Host inner products: a model measured on this machine (cnnfpga/design/host_model.py); other host layers "
    "(softmax, concatenation, ...) are not timed.",
)
NAMES = {"dsp": "DSP blocks", "ram_blocks": "RAM blocks", "logic": "logic"}


def layer_rows(evaluation, host_times: dict) -> list:
    """One row per layer of the net: device stages with their costs, layers fused into them, host layers."""
    plan, design = evaluation.design.plan, evaluation.design
    partition_of = {index: k + 1 for k, indices in enumerate(design.partition_stages()) for index in indices}
    costs = {cost.stage.index: cost for cost in evaluation.stages}
    interval = evaluation.interval_cycles
    rows = []
    for step in plan.steps:
        if isinstance(step, HostStep):
            rows.append({"name": step.layer.name, "type": step.layer.type, "location": "host", "parallelism": None,
                         "cycles": None, "dsp": 0, "ram_blocks": 0, "logic": 0, "reason": step.reason,
                         "host_ms": host_times.get(step.layer.name)})
            continue
        for stage in step.stages:
            cost = costs[stage.index]
            sd = design.of(stage)
            parallelism = {"width_in": sd.width_in, "width_out": sd.width_out}
            describe = sd.describe()
            if stage.kind == "conv":
                parallelism.update(ci=sd.ci, co=sd.co, f=sd.f, weights=sd.weights, reload_passes=stage.passes)
                describe += f", {stage.passes} passes" if stage.passes > 1 else ""
            rows.append({"name": stage.name, "type": stage.layer.type, "location": "fpga", "stage": stage.index,
                         "partition": partition_of[stage.index],
                         "parallelism": parallelism, "describe": describe,
                         "cycles": cost.schedule.image_cycles, "launch_cycles": cost.schedule.launch_cycles,
                         "share": cost.schedule.image_cycles / interval, "macs": cost.macs,
                         "multipliers": cost.resources.multipliers, "dsp": cost.resources.dsp,
                         "ram_blocks": cost.resources.ram_blocks, "logic": cost.resources.logic,
                         "precision": str(stage.precision.inputs) if stage.precision.inputs == stage.precision.outputs
                         else f"{stage.precision.inputs} -> {stage.precision.outputs}"})
            rows += [{"name": name, "type": "", "location": "fpga", "fused_into": stage.name, "parallelism": None,
                      "cycles": None, "dsp": 0, "ram_blocks": 0, "logic": 0} for name in stage.fused]
    return rows


def report_data(evaluation, meta: dict, host_times: dict) -> dict:
    totals = evaluation.totals
    used = evaluation.utilisation()
    board = evaluation.board
    channel_blocks = sum(blocks for blocks, _ in evaluation.channels.values())
    return {
        **meta,
        "board": board.name,
        "device": board.device,
        "fmax_mhz": evaluation.fmax_mhz,
        "batch": evaluation.batch,
        "layers": layer_rows(evaluation, host_times),
        "channels": {name: {"depth": evaluation.design.channel_depths[name], "ram_blocks": blocks, "logic": logic}
                     for name, (blocks, logic) in evaluation.channels.items()},
        "totals": {"dsp": totals.dsp, "ram_blocks": totals.ram_blocks, "logic": totals.logic,
                   "multipliers": totals.multipliers, "channel_ram_blocks": channel_blocks,
                   "dsp_fraction": used["dsp"], "ram_blocks_fraction": used["ram_blocks"],
                   "logic_fraction": used["logic"],
                   "board": {"dsp": board.dsp.blocks, "ram_blocks": board.ram.blocks, "logic": board.logic.count},
                   "units": {"dsp": board.dsp.unit, "ram_blocks": board.ram.unit, "logic": board.logic.unit}},
        "binding_resource": evaluation.binding(),
        "partitions": [{"stages": [stage.name for stage in p.stages], "dsp": t.dsp, "ram_blocks": t.ram_blocks,
                        "logic": t.logic, "dsp_fraction": t.dsp / board.dsp.blocks,
                        "ram_blocks_fraction": t.ram_blocks / board.ram.blocks,
                        "logic_fraction": t.logic / board.logic.count}
                       for p, t in zip(evaluation.design.partition_plans(), evaluation.partition_totals)],
        "ddr": {"bytes_per_image": totals.ddr_bytes_per_image, "bytes_per_launch": totals.ddr_bytes_per_launch,
                "board_gbs": board.ddr_gbs},
        # every segment reads its input from DDR and writes its output back, and the runtime passes
        # each blob through the host between them: the round trips branching layers on the host cost
        "segments": len(evaluation.design.plan.segments),
        "host_layers": sorted({step.layer.type for step in evaluation.design.plan.steps if isinstance(step, HostStep)}),
        "host_layer_count": sum(isinstance(step, HostStep) for step in evaluation.design.plan.steps),
        "predicted": evaluation.predicted(),
        "assumptions": list(ASSUMPTIONS),
    }


def number(value) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.3g}"


def report_text(data: dict) -> str:
    p, t = data["predicted"], data["totals"]
    units = t["units"]
    head = (f"{data['net']} on {data['board']} ({data['device']}), precision {data['precision']}, "
            f"objective {data['objective']}, batch {data['batch']}, fmax {data['fmax_mhz']:g} MHz, "
            f"cap {data['max_util']:.0%} of every resource")
    rows = [("layer", "type", "runs on", "parallelism", "cycles/image", "share", units["dsp"], units["ram_blocks"],
             units["logic"], "host ms")]
    for row in data["layers"]:
        if row["location"] == "host":
            rows.append((row["name"], row["type"], "host", "-", "-", "", "", "", "", number(row.get("host_ms"))))
        elif "fused_into" in row:
            rows.append((row["name"], "", f"fused into {row['fused_into']}", "", "", "", "", "", "", ""))
        else:
            where = f"fpga {row['partition']} stage {row['stage']}" if len(data["partitions"]) > 1 else \
                f"fpga stage {row['stage']}"
            rows.append((row["name"], row["type"], where, row["describe"], number(row["cycles"]),
                         f"{row['share']:.0%}", number(row["dsp"]), number(row["ram_blocks"]), number(row["logic"]), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    table.insert(1, "  ".join("-" * w for w in widths))
    lines = [head, "", *table, "",
             f"totals: {t['dsp']:,} {units['dsp']} ({t['dsp_fraction']:.1%}), {t['ram_blocks']:,} {units['ram_blocks']} "
             f"({t['ram_blocks_fraction']:.1%}; channel FIFOs {t['channel_ram_blocks']:,}), {t['logic']:,} "
             f"{units['logic']} ({t['logic_fraction']:.1%}); binding: {NAMES[data['binding_resource']]}",
             *partition_lines(data),
             f"{data['segments']} device segment(s), each a round trip through DDR and the host; "
             f"{data['host_layer_count']} host layer(s) ({', '.join(data['host_layers']) or 'none'})",
             f"interval {p['interval_cycles']:,} cycles per image ({p['interval_cycles'] / data['fmax_mhz'] / 1e3:.3f} ms); "
             f"a batch of {data['batch']}: {p['batch_cycles']:,.0f} cycles",
             f"FPGA latency {p['latency_ms']:.3f} ms, host inner products {p['host_latency_ms']:.3f} ms, "
             f"end to end {p['end_to_end_latency_ms']:.3f} ms",
             f"throughput {p['throughput_img_s']:,.1f} images/s (FPGA alone {p['fpga_throughput_img_s']:,.1f}), "
             f"{p['gops']:,.1f} GOp/s",
             f"physical bound {p['bound_ms']:.3f} ms per image (every MAC on all the "
             f"{'board' if p['fpgas'] == 1 else str(p['fpgas']) + ' boards'}'s multipliers at fmax): "
             f"efficiency {p['efficiency']:.0%} of the batch's time, {p['interval_efficiency']:.0%} of the interval",
             f"DDR: {data['ddr']['bytes_per_image']:,} bytes per image, {data['ddr']['bytes_per_launch']:,} per launch: "
             f"{p['ddr_fraction']:.1%} of the board's {data['ddr']['board_gbs']:g} GB/s"]
    if "verified" in data:
        v = data["verified"]
        lines.append(f"verified on {v['device']}: {v['outputs']}; measured cycles "
                     f"{'equal the model for every stage' if v['cycles_equal'] else 'DIFFER from the model'}")
    return "\n".join(lines) + "\n"


def partition_lines(data: dict) -> list:
    """What a partitioned design adds to the report: how its programs run and what each uses."""
    parts, p, units = data["partitions"], data["predicted"], data["totals"]["units"]
    if len(parts) == 1:
        return []
    if p["fpgas"] > 1:
        lines = [f"partitions: {len(parts)} boards in series, each streaming to the next over the board-to-board "
                 f"link; totals are the largest board's"]
    else:
        pays = data.get("partitioning_pays_from_batch")
        pays = ("" if "partitioning_pays_from_batch" not in data else
                "; one program does not fit" if pays is None else
                "; never faster per image than one program" if pays == 0 else
                f"; faster per image than one program from a batch of {pays}")
        lines = [f"partitions: {len(parts)} programs in turn on one board, reconfigured {p['reconfigurations']} times "
                 f"per batch ({p['reconfiguration_ms']:,.0f} ms, in the latency){pays}; totals are the largest "
                 f"partition's"]
    for k, part in enumerate(parts):
        lines.append(f"  partition {k + 1}: {part['stages'][0]} .. {part['stages'][-1]}: {part['dsp']:,} {units['dsp']} "
                     f"({part['dsp_fraction']:.1%}), {part['ram_blocks']:,} {units['ram_blocks']} "
                     f"({part['ram_blocks_fraction']:.1%}), {part['logic']:,} {units['logic']} "
                     f"({part['logic_fraction']:.1%})")
    return lines


def makefile_text(data: dict, sources: list) -> str:
    lines = [f"# Build the aoc design of {data['net']} for {data['board']} ({data['device']}),",
             "# one bitstream per program. BOARD is your board support package's board name (aoc -list-boards).",
             "BOARD ?= set-your-bsp-board-name", "",
             "all: " + " ".join(f"{Path(name).stem}.aocx" for name in sources), "",
             "emulate: " + " ".join(f"{Path(name).stem}_emulator.aocx" for name in sources), ""]
    for name in sources:
        stem = Path(name).stem
        lines += [f"{stem}.aocx: {name}", f"\taoc -v -report -board=$(BOARD) {name} -o {stem}.aocx", "",
                  f"{stem}_emulator.aocx: {name}", f"\taoc -march=emulator -v {name} -o {stem}_emulator.aocx", ""]
    return "\n".join(lines)


def plot_balance(data: dict, path: Path) -> bool:
    """Cycles per stage against the interval (matplotlib, if installed)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    stages = [row for row in data["layers"] if row["location"] == "fpga" and row.get("cycles") is not None]
    figure, axes = plt.subplots(figsize=(max(6, 0.5 * len(stages) + 2), 4))
    axes.bar(range(len(stages)), [row["cycles"] for row in stages], color="#4a7ab0")
    axes.axhline(data["predicted"]["interval_cycles"], color="#c0392b", linestyle="--", label="interval (per image, all segments)")
    axes.set_xticks(range(len(stages)), [row["name"] for row in stages], rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("cycles per image")
    axes.set_title(f"{Path(data['net']).name} on {data['board']}, {data['precision']}", fontsize=10)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_report(directory, data: dict, sources: dict) -> list:
    """report.json, report.txt, the aoc source of every program ({file name: text}), the Makefile and
    balance.png into `directory`; the names written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(data, indent=1) + "\n")
    (directory / "report.txt").write_text(report_text(data))
    for name, source in sources.items():
        (directory / name).write_text(source)
    (directory / "Makefile").write_text(makefile_text(data, list(sources)))
    written = ["report.json", "report.txt", *sources, "Makefile"]
    if plot_balance(data, directory / "balance.png"):
        written.append("balance.png")
    return written
