"""Choosing an OpenCL device and building (or loading) the program for it, with a disk cache."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import warnings
from pathlib import Path

import pyopencl as cl

from ..errors import DeviceError

log = logging.getLogger("cnnfpga")
INSTALL_HINT = ("install an OpenCL platform: for the CPU, `apt-get install pocl-opencl-icd` (PoCL); "
                "for an Intel FPGA, the board's BSP and the Intel FPGA runtime")


def all_devices() -> list:
    """[(platform index, device index, platform, device)] of every OpenCL device on the machine."""
    try:
        platforms = cl.get_platforms()
    except cl.Error:   # the ICD loader says "no platform" by raising (PLATFORM_NOT_FOUND_KHR)
        platforms = []
    found = []
    for p, platform in enumerate(platforms):
        try:
            devices = platform.get_devices()
        except cl.Error:
            devices = []
        found += [(p, d, platform, device) for d, device in enumerate(devices)]
    return found


def is_fpga(device) -> bool:
    return "fpga" in device.platform.name.lower() or bool(device.type & cl.device_type.ACCELERATOR)


def is_emulator(device) -> bool:
    """Intel's FPGA Emulation Platform: an FPGA platform by name, but the host's CPU underneath."""
    name = device.platform.name.lower()
    return "emulation" in name and "fpga" in name


def select_device(selector: str = None):
    """The device named by `selector` (or $CNNFPGA_DEVICE): "P:D" indices or a substring of the
    platform's name or vendor or the device's name ("FPGA Emulation" picks Intel's emulator).  Without
    one: a real FPGA board, else the first device that is not the emulator (it runs FPGA code on the
    host's CPU to check it, not to be fast, so it is chosen by name), else the emulator when it is the
    only device."""
    selector = selector if selector is not None else os.environ.get("CNNFPGA_DEVICE")
    found = all_devices()
    if not found:
        raise DeviceError(f"no OpenCL platform or device found; {INSTALL_HINT}")
    listing = "; ".join(f"{p}:{d} {platform.name.strip()} / {device.name.strip()}" for p, d, platform, device in found)
    if selector:
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", selector)
        for p, d, platform, device in found:
            if match and (p, d) == (int(match.group(1)), int(match.group(2))):
                return device
            names = (platform.name, platform.vendor, device.name)   # PoCL's vendor is "The pocl project"
            if not match and any(selector.lower() in name.lower() for name in names):
                return device
        raise DeviceError(f"no OpenCL device matches {selector!r} (from the device= argument or $CNNFPGA_DEVICE); "
                          f"available: {listing}")
    devices = [device for *_, device in found]
    boards = [device for device in devices if is_fpga(device) and not is_emulator(device)]
    not_emulators = [device for device in devices if not is_emulator(device)]
    return (boards or not_emulators or devices)[0]


def host_cores_but_one(device):
    """A sub-device of all of `device`'s compute units but one, when `device` is the host's own CPU
    (so that a stream can leave a core to the host layers); None for other devices, a single core,
    or a platform that cannot partition."""
    units = device.max_compute_units
    if is_fpga(device) or not device.type & cl.device_type.CPU or units < 2:
        return None
    try:
        return device.create_sub_devices([cl.device_partition_property.BY_COUNTS, units - 1,
                                          cl.device_partition_property.BY_COUNTS_LIST_END])[0]
    except (cl.Error, cl.LogicError, cl.RuntimeError):
        return None


def cache_dir() -> Path:
    return Path(os.environ.get("CNNFPGA_CACHE") or Path.home() / ".cache" / "cnnfpga")


def cache_key(source: str, options: list, device) -> str:
    text = "\n".join([source, " ".join(options), device.platform.name, device.platform.version, device.name,
                      device.driver_version])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@contextlib.contextmanager
def compiler_remarks_ignored():
    """pyopencl warns of any compiler output, even on a build that worked; the user can do nothing with it
    (a failed build's log goes into the DeviceError)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cl.CompilerWarning)
        yield


def build_program(context, devices: list, source: str, options: list, describe_line=None, bitstream: str = None,
                  label: str = "the OpenCL program"):
    """Build `source` for `devices` (a device and its sub-devices), reusing a cached binary of the
    same source and options; the first device names the cache entry.

    describe_line(line) -> str names what a source line belongs to (a stage), for build errors.
    bitstream: a prebuilt binary (an aoc .aocx) to load instead of compiling.
    label: what the progress line calls it (one of several programs: which).
    """
    device = devices[0]
    if bitstream is not None:
        try:
            binary = Path(bitstream).read_bytes()
        except OSError as error:
            raise DeviceError(f"{bitstream}: cannot read the bitstream: {error.strerror or error}") from None
        try:
            return cl.Program(context, devices, [binary] * len(devices)).build()
        except cl.Error as error:
            raise DeviceError(f"{bitstream}: the device '{device.name.strip()}' refused the bitstream: {error}") from None
    path = cache_dir() / f"{cache_key(source, options, device)}.bin"
    if path.is_file():
        try:
            with compiler_remarks_ignored():
                return cl.Program(context, devices, [path.read_bytes()] * len(devices)).build(options=options)
        except cl.Error:
            path.unlink(missing_ok=True)   # stale or foreign binary: rebuild from source
    log.info("compiling %s for %s (the first build of a design can take a minute; it is cached in %s)", label,
             device.name.strip(), cache_dir())
    program = cl.Program(context, source)
    try:
        with compiler_remarks_ignored():
            program.build(options=options, devices=devices)
    except cl.Error as error:
        raise DeviceError(build_failure(program, device, error, describe_line)) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(program.binaries[0])
        tmp.replace(path)
    except OSError:
        pass   # a read-only cache only costs compile time
    return program


def build_failure(program, device, error, describe_line) -> str:
    try:
        log = program.get_build_info(device, cl.program_build_info.LOG)
    except cl.Error:
        log = ""
    log = log.strip() or str(error)
    culprits = []
    # clang puts "error" before (PoCL) or after (aoc, most others) the "file:line:column:" part
    error_lines = [text for text in log.splitlines() if "error" in text]
    for line in re.findall(r":(\d+):\d+:", "\n".join(error_lines)):
        where = describe_line(int(line)) if describe_line else None
        if where and where not in culprits:
            culprits.append(where)
    blame = "; ".join(culprits) if culprits else "no stage could be identified from the log"
    return f"the OpenCL program failed to build on '{device.name.strip()}' ({blame}). Build log:\n{log}"
