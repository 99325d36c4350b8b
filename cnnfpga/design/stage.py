"""What the design decides for one device stage, and what every stage kind provides.

A StageDesign is a stage's parallelism and stream widths.  Each stage kind has a module in this
package (conv, pool, lrn, relu, eltwise, concat) with the same plain functions -- the kind's record, as the
layer registry is for shapes and the golden model:

    check(stage, design)          -> None, or raise DesignError saying why the design is invalid
    schedule(stage, design)       -> Schedule: the trip counts of the kernel's pipelined loops
    constants(stage, design, s)   -> {name: int}: every number the kernel template is compiled with
    template(stage, design)       -> the kernel template's file name (kernels/)
    onchip(stage, design, s)      -> [OnChip]: the on-chip arrays and their sizes
    arrays(stage, design)         -> [numpy array]: host data the kernel reads (weights, tables)
    resources(stage, design, s, board) -> Resources

The code generator writes constants() into the template, the runtime allocates onchip() (as global
scratch memory where channels are emulated) and uploads arrays(), and the cost model reads the
same schedule -- so the cycles the model predicts are the iterations the kernel runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DesignError
from ..precision import storage_bits


@dataclass(frozen=True)
class StageDesign:
    """How wide one device stage is (frozen: the balancer's caches key on it)."""
    index: int
    kind: str
    width_in: int              # values per input word
    width_out: int             # values per output word
    ci: int = 1                # conv: input channels per step
    co: int = 1                # conv: output channels per step
    f: int = 1                 # conv: kernel positions per step (1, KW or KH x KW)
    weights: str = "chip"      # conv: "chip" (loaded once per launch) or "ddr" (streamed once per image)
    load_width: int = 16       # values read from DDR per iteration when loading weights or tables
    logic_multipliers: bool = False   # multiplies of <= 10 bits built in logic instead of DSP blocks

    def describe(self) -> str:
        widths = f"in {self.width_in}/out {self.width_out}"
        if self.kind != "conv":
            return f"width {self.width_in}" if self.width_in == self.width_out else widths
        where = "" if self.weights == "chip" else ", weights from DDR"
        logic = ", multiplies in logic" if self.logic_multipliers else ""
        return f"ci={self.ci} co={self.co} f={self.f}, {widths}{where}{logic}"


@dataclass(frozen=True)
class Schedule:
    """Iterations of a stage's pipelined loops: once per launch (loading weights or tables), and
    per image -- of one pass; a conv reloading its weights runs `passes` launches, one per share of
    its filters.  Cycles for a batch = passes x (launch_iters + batch * image_iters)."""
    launch_iters: int
    image_iters: int
    window: object = None      # the WindowSchedule of a sliding-window stage
    phases: tuple = ()         # (iterations, input words read, output words written) per phase of an image
    passes: int = 1

    @property
    def launch_cycles(self) -> int:
        return self.passes * self.launch_iters

    @property
    def image_cycles(self) -> int:
        return self.passes * self.image_iters

    def cycles(self, batch: int) -> int:
        return self.launch_cycles + batch * self.image_cycles


@dataclass(frozen=True)
class OnChip:
    """An on-chip array of a stage: its kernel name, the format of its values and how many."""
    name: str
    bits: int                  # bits per value as stored
    count: int
    dtype: str                 # numpy dtype of the emulation's scratch buffer
    width: int = 1             # values read or written together (the memory's word width)
    copies: int = 1            # replicas, one per kernel column read in the same cycle
    banks: int = 1             # banks the values are split over, one per row read in the same cycle


@dataclass
class Resources:
    multipliers: int = 0       # multiplies per cycle
    dsp: int = 0
    ram_blocks: int = 0
    logic: int = 0
    ddr_bytes_per_image: int = 0
    ddr_bytes_per_launch: int = 0
    detail: dict = field(default_factory=dict)   # what each memory and unit costs, for the report

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(self.multipliers + other.multipliers, self.dsp + other.dsp,
                         self.ram_blocks + other.ram_blocks, self.logic + other.logic,
                         self.ddr_bytes_per_image + other.ddr_bytes_per_image,
                         self.ddr_bytes_per_launch + other.ddr_bytes_per_launch, {})


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def padded(channels: int, width: int) -> int:
    """Channels rounded up to whole words of `width` values."""
    return ceil_div(channels, width) * width


def divisors(n: int) -> list:
    return [d for d in range(1, n + 1) if n % d == 0]


def power_of_two_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def refuse(stage, message: str):
    raise DesignError(f"{stage.layer.where}: {message}")


def refuse_unless_as_wide(stage, design, what: str) -> None:
    """The check of every stage kind whose words are as wide out as in (all but a convolution); `what`
    names the stage in the message ("a ReLU stage")."""
    if design.width_in < 1 or design.width_out != design.width_in:
        refuse(stage, f"{what} writes words as wide as it reads (in {design.width_in}, out {design.width_out})")


def side_bytes(stage, design) -> int:
    """Bytes of a sum's or a concat's other inputs read from DDR per image (not those streamed from its
    segment), each in its own format, in words of the stage's width."""
    return sum(h * w * padded(c, design.width_in) * storage_bits(fmt) // 8
               for (_, c, h, w), fmt, ddr in zip(stage.side_shapes, stage.precision.sides, stage.sides_from_ddr) if ddr)


def side_ports(stage) -> int:
    """A sum's or a concat's other inputs read through DDR ports of their own."""
    return sum(stage.sides_from_ddr)
