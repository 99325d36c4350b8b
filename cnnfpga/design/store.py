"""A design on disk: DIR/design.json holds what the kernels are built from -- every device layer's
formats (fractional bits included) and every stage's parallelism, stream widths, weight placement
and channel depths, the partitions and the convolutions reloading their weights in passes -- plus
the net it was made for.  ``load_design`` rebuilds exactly that Design
for a graph of the same net, so that ``Net(..., design=DIR)`` runs what DIR/design.cl (design_p1.cl,
... for a partitioned design) describes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path

from ..errors import DesignError, PrecisionError
from ..layers import runs_on_device
from ..placement import cut_at, place, reload_filters
from ..precision import LayerPrecision, exact_format
from . import Design
from .stage import StageDesign

DESIGN_FILE = "design.json"
PRECISION_KEYS = ("weights", "inputs", "outputs")   # a LayerPrecision's formats, and "sides" (a list) where it has any
FORMAT_VERSION = 1


def net_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def design_record(design: Design, net_path, extra: dict = None) -> dict:
    plan = design.plan
    names = {stage.index: stage.name for stage in plan.stages}
    return {
        "format": FORMAT_VERSION,
        "net": str(net_path),
        "net_sha256": net_digest(net_path),
        "precisions": {layer.name: precision_record(plan.precisions[layer.name])
                       for layer in plan.graph.layers if runs_on_device(layer)},
        "stages": [dict(name=stage.name, **asdict(design.of(stage))) for stage in plan.stages],
        "channel_depths": dict(design.channel_depths),
        "partitions": [[names[index] for index in indices] for indices in design.partitions],
        "reload_passes": {stage.name: stage.passes for stage in plan.stages if stage.passes > 1},
        "fpgas": design.fpgas,
        **(extra or {}),
    }


def precision_record(p: LayerPrecision) -> dict:
    record = {key: str(getattr(p, key)) for key in PRECISION_KEYS}
    if p.sides:
        record["sides"] = [str(fmt) for fmt in p.sides]
    return record


def read_precision(p: dict, where: str) -> LayerPrecision:
    """A LayerPrecision from its record; a sum's one other input may be stored as "side" (the first
    files with sums)."""
    sides = p.get("sides", [p["side"]] if "side" in p else [])
    if not isinstance(sides, list):
        raise TypeError(f"{where} sides must be a list of formats")
    return LayerPrecision(**{key: exact_format(p[key], f"{where} {key}") for key in PRECISION_KEYS},
                          sides=tuple(exact_format(fmt, f"{where} sides") for fmt in sides))


def save_design(design: Design, directory, net_path, extra: dict = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DESIGN_FILE
    path.write_text(json.dumps(design_record(design, net_path, extra), indent=1) + "\n")
    return path


def read_record(directory) -> tuple:
    path = Path(directory) / DESIGN_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise DesignError(f"{path}: no design here (write one with python -m cnnfpga.design ... --out {directory})") \
            from None
    except (OSError, UnicodeDecodeError) as error:
        raise DesignError(f"{path}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise DesignError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
        raise DesignError(f"{path}: not a cnnfpga design file of format {FORMAT_VERSION}")
    return path, record


def load_design(directory, graph) -> Design:
    """The Design stored in `directory`, for `graph` (the same net, any batch size)."""
    path, record = read_record(directory)
    try:
        precisions = {name: read_precision(p, f"{path}: layer '{name}'") for name, p in record["precisions"].items()}
        plan = place(graph, precisions)
        stored = {entry["name"]: entry for entry in record["stages"]}
        names = [stage.name for stage in plan.stages]
        if sorted(names) != sorted(stored):
            missing = sorted(set(names) - set(stored)) or sorted(set(stored) - set(names))
            raise DesignError(f"{path}: made for another net ({record['net']}): its device stages differ from "
                              f"{graph.path}'s (e.g. '{missing[0]}')")
        index = {stage.name: stage.index for stage in plan.stages}
        for name, passes in record.get("reload_passes", {}).items():
            plan = reload_filters(plan, index[name], int(passes))
        partitions = tuple(tuple(index[name] for name in part) for part in record.get("partitions", []))
        if partitions:
            plan = cut_at(plan, [part[0] for part in partitions[1:]])
            if [i for part in partitions for i in part] != [stage.index for stage in plan.stages]:
                raise DesignError(f"{path}: its partitions do not list the device stages once each, in order")
        known = {f.name for f in fields(StageDesign)}
        stages = {}
        for stage in plan.stages:
            entry = {key: value for key, value in stored[stage.name].items() if key in known}
            stages[stage.index] = StageDesign(**{**entry, "index": stage.index})
        design = Design(plan, stages, dict(record["channel_depths"]), partitions=partitions,
                        fpgas=int(record.get("fpgas", 1)))
    except (KeyError, TypeError, ValueError, PrecisionError) as error:   # reload_filters' refusal too
        raise DesignError(f"{path}: malformed design file ({error})") from None
    design.check()
    return design
