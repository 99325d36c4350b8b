"""Design space exploration: balanced designs at several resource caps and for both objectives, and
at the full cap the net in 2 and 3 partitions reconfigured in turn (partitions.py), and the ones no
other design beats at once in latency (batch 1), throughput (at the batch asked for) and the share of
the board they use (`cnnfpga design --objective pareto`).

Every point is a balanced design (balance.py), so the set is deterministic. A smaller cap leaves room
on the board (for another net, a wider BSP, or a second copy of the design) and costs speed; the two
objectives trade the last stages' tails (latency) against the slowest stage (throughput); partitions
give each part of the net the whole board, at a reconfiguration per partition per batch.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging

from ..errors import DesignError
from .balance import OBJECTIVES, balance
from .model import evaluate
from .partitions import design_partitions

CAPS = (0.15, 0.25, 0.35, 0.5, 0.65, 0.85)   # resource caps explored, up to the one asked for
PARTITIONS = (2, 3)                          # partition counts explored at the cap asked for
log = logging.getLogger("cnnfpga")


@dataclass
class Point:
    max_util: float              # the cap the design was balanced under
    objective: str
    latency_ms: float            # FPGA latency of one image (batch 1)
    throughput: float            # images/s of the FPGA at the batch asked for
    utilisation: float           # the largest share of any resource the design uses
    binding: str                 # that resource
    design: object
    partitions: int = 1          # programs reconfigured in turn

    def beats(self, other: "Point") -> bool:
        """No worse in all three and better in one."""
        mine = (self.latency_ms, -self.throughput, self.utilisation)
        theirs = (other.latency_ms, -other.throughput, other.utilisation)
        return all(a <= b for a, b in zip(mine, theirs)) and mine != theirs

    def row(self) -> dict:
        return {"max_util": self.max_util, "objective": self.objective, "partitions": self.partitions,
                "latency_ms": self.latency_ms, "throughput_img_s": self.throughput, "utilisation": self.utilisation,
                "binding": self.binding}


def point(design, board, batch: int, max_util: float, objective: str, fmax_mhz, host_seconds) -> Point:
    single = evaluate(design, board, 1, fmax_mhz, host_seconds)
    batched = evaluate(design, board, batch, fmax_mhz, host_seconds)
    used = batched.utilisation()
    binding = max(used, key=used.get)
    return Point(max_util, objective, single.fpga_seconds * 1e3, batch / batched.fpga_seconds, used[binding],
                 binding, design, len(design.partition_stages()))


def non_dominated(points: list) -> list:
    """The points no other point beats, by latency (then throughput)."""
    front = [p for p in points if not any(q.beats(p) for q in points)]
    unique = {(p.latency_ms, p.throughput, p.utilisation): p for p in front}   # equal designs: keep one
    return sorted(unique.values(), key=lambda p: (p.latency_ms, -p.throughput))


def explore(plan, board, batch: int = 1, max_util: float = 0.85, fmax_mhz: float = None,
            host_seconds: float = 0.0) -> list:
    """The non-dominated designs of `plan` on `board` over CAPS (up to `max_util`) and both objectives,
    and PARTITIONS at `max_util`."""
    caps = sorted({cap for cap in CAPS if cap < max_util} | {max_util})
    tries = [(cap, objective, 1) for cap in caps for objective in OBJECTIVES]
    tries += [(max_util, objective, count) for count in PARTITIONS for objective in OBJECTIVES]
    points = []
    for cap, objective, count in tries:
        try:
            design = (balance(plan, board, batch, objective, cap, fmax_mhz, host_seconds) if count == 1 else
                      design_partitions(plan, board, count, 1, batch, objective, cap, fmax_mhz, host_seconds))
        except DesignError:   # the smallest design does not fit under this cap (or fewer stages than partitions)
            continue
        points.append(point(design, board, batch, cap, objective, fmax_mhz, host_seconds))
        log.info("cap %.0f%%, %s, %d partition(s): %.3f ms, %.0f images/s, %.0f%% of the %s", 100 * cap, objective,
                 count, points[-1].latency_ms, points[-1].throughput, 100 * points[-1].utilisation,
                 points[-1].binding)
    if not points:
        raise DesignError(f"no design fits on {board.name} under any cap up to {max_util:.0%}")
    return non_dominated(points)


def pareto_text(rows: list, batch: int) -> str:
    lines = [f"Pareto set: {len(rows)} design(s) no other beats in latency, throughput at batch {batch} and "
             f"board share", f"  {'cap':>5}  {'objective':10}  {'programs':>8}  {'latency ms':>10}  {'images/s':>9}  "
                             f"{'share':>6}  binding"]
    for row in rows:
        lines.append(f"  {row['max_util']:>5.0%}  {row['objective']:10}  {row['partitions']:>8}  "
                     f"{row['latency_ms']:>10.3f}  {row['throughput_img_s']:>9.1f}  {row['utilisation']:>6.0%}  "
                     f"{row['binding']}")
    return "\n".join(lines) + "\n"


def plot_pareto(rows: list, title: str, path) -> bool:
    """Latency against throughput, each point labelled with its board share (matplotlib, if installed)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot([r["throughput_img_s"] for r in rows], [r["latency_ms"] for r in rows], "o-", color="#4a7ab0")
    for k, row in enumerate(rows):
        label = f"{row['utilisation']:.0%} {row['objective']}" + (f", {row['partitions']} programs"
                                                                  if row["partitions"] > 1 else "")
        # neighbours alternate above and below the line: the two objectives often nearly coincide
        axes.annotate(label, (row["throughput_img_s"], row["latency_ms"]), textcoords="offset points",
                      xytext=(6, 6) if k % 2 else (-6, -12), ha="left" if k % 2 else "right", fontsize=7)
    axes.set_xlabel("images/s (FPGA, at the batch asked for)")
    axes.set_ylabel("latency, ms (batch 1)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
