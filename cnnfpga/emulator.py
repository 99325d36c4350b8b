"""Intel's FPGA Emulation Platform for OpenCL, installed from PyPI into its own virtual environment.

    python3 -m cnnfpga.emulator install [--prefix DIR] [--system]
    python3 -m cnnfpga.emulator status

The wheels ship the emulator's library but no usable ICD file (theirs holds a build-time placeholder path),
so install writes one: into DIR/vendors for OCL_ICD_VENDORS, and with --system into /etc/OpenCL/vendors.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# Pinned, with everything they pull in, so that every install gets the same emulator.
PACKAGES = ["intel-opencl-fpga-emu-rt==2025.0.5", "intel-opencl-rt==2025.0.5", "intel-cmplr-lib-rt==2025.0.5",
            "intel-cmplr-lic-rt==2025.3.3", "tbb==2022.3.1", "tcmlib==1.6.0"]
DEFAULT_PREFIX = Path.home() / ".local" / "share" / "cnnfpga" / "fpga-emulator"
SYSTEM_VENDORS = Path("/etc/OpenCL/vendors")
ICD_NAME = "intel-fpga-emulator.icd"


class InstallError(Exception):
    """A step of the install failed; the message says which and what to do."""


def install(prefix=DEFAULT_PREFIX, system: bool = False) -> Path:
    """Install the emulator into a virtual environment at `prefix` and write its ICD folder (and, with
    `system`, the system-wide ICD file); returns the ICD folder for OCL_ICD_VENDORS."""
    prefix = Path(prefix).expanduser().absolute()
    if system and os.geteuid() != 0:   # checked first: the download is 300 MB
        raise InstallError(f"--system writes {SYSTEM_VENDORS} and needs root: run as root or leave out --system")
    python = prefix / "bin" / "python"
    if not python.exists():
        step(f"creating a virtual environment at {prefix}")
        venv = subprocess.run([sys.executable, "-m", "venv", str(prefix)], capture_output=True, text=True)
        if venv.returncode != 0:
            message = (venv.stderr or venv.stdout).strip()
            hint = "; on Debian, `apt-get install python3-venv`" if "ensurepip" in message else ""
            raise InstallError(f"`{sys.executable} -m venv {prefix}` failed: "
                               f"{(message.splitlines() or ['no message'])[-1]}{hint}")
    if subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True).returncode != 0:
        raise InstallError(f"{python} has no pip; delete {prefix} and install again "
                           "(on Debian, `apt-get install python3-venv` first)")
    step(f"pip install {' '.join(PACKAGES)}")
    pip_install(python)
    library = prefix / "lib" / "libintelocl_emu.so"
    if not library.is_file():
        raise InstallError(f"pip installed the wheels but {library} is missing: the wheels' layout changed")
    vendors = write_icd_folder(prefix / "vendors", library)
    step(f"wrote {vendors / ICD_NAME} and copies of the system's ICD files")
    if system:
        write_icd(SYSTEM_VENDORS / ICD_NAME, library)
        step(f"wrote {SYSTEM_VENDORS / ICD_NAME}: every OpenCL program sees the emulator, no variable needed")
    return vendors


def pip_install(python: Path):
    """pip install PACKAGES, its output shown as it comes; a failure is told in one line, with a guess at
    the cause from pip's error output (which is also shown)."""
    pip = subprocess.Popen([str(python), "-m", "pip", "install", "--disable-pip-version-check", *PACKAGES],
                           stderr=subprocess.PIPE, text=True)
    errors = []
    for line in pip.stderr:
        sys.stderr.write(line)
        errors.append(line)
    if pip.wait() != 0:
        text = "".join(errors)
        if any(sign in text for sign in ["NewConnectionError", "Temporary failure in name resolution",
                                         "Network is unreachable", "ConnectTimeoutError", "ReadTimeoutError"]):
            cause = "PyPI cannot be reached (no network?)"
        elif "(from versions: none)" in text:
            cause = "pip's index offered no version of them (no network, or an index without these wheels?)"
        else:
            cause = "see pip's messages above"
        raise InstallError(f"pip could not install the emulator wheels into {python.parent.parent}: {cause}")


def write_icd(path: Path, library: Path):
    """An ICD file: the ICD loader reads the library's path from its first line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{library}\n")


def write_icd_folder(folder: Path, library: Path, system_vendors: Path = SYSTEM_VENDORS) -> Path:
    """`folder` with the emulator's ICD file and copies of the system's ones: OCL_ICD_VENDORS pointing at a
    folder replaces the system folder, and PoCL must stay visible.  Earlier copies are dropped first so the
    folder mirrors the system's as it is now."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.icd"):
        old.unlink()
    for icd in sorted(Path(system_vendors).glob("*.icd")):
        if icd.name != ICD_NAME:   # an earlier --system install's: ours, written below, replaces it
            (folder / icd.name).write_bytes(icd.read_bytes())
    write_icd(folder / ICD_NAME, library)
    return folder


def emulator_visible() -> bool:
    from .runtime.device import all_devices, is_emulator
    return any(is_emulator(device) for *_, device in all_devices())


def status() -> bool:
    """Print the OpenCL devices this process sees and whether the emulator is one of them."""
    from .runtime.device import all_devices, is_emulator
    found = all_devices()
    for p, d, platform, device in found:
        print(f"{p}:{d} {platform.name.strip()} / {device.name.strip()}")
    if not found:
        print("no OpenCL platform found")
    emulators = [f"{p}:{d}" for p, d, _, device in found if is_emulator(device)]
    if emulators:
        print(f"the Intel FPGA emulator is visible ({', '.join(emulators)}); pick it with device=\"FPGA Emulation\"")
        return True
    print("the Intel FPGA emulator is not visible: run `python3 -m cnnfpga.emulator install`, then "
          f"`export OCL_ICD_VENDORS={DEFAULT_PREFIX / 'vendors'}` (or the prefix you chose; as root, "
          "`install --system` needs no variable)"
          + (f"; OCL_ICD_VENDORS is now {os.environ['OCL_ICD_VENDORS']}" if "OCL_ICD_VENDORS" in os.environ else ""))
    return False


def step(text: str):
    print(f"cnnfpga.emulator: {text}", flush=True)   # flushed: pip's output goes to the same terminal


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m cnnfpga.emulator", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    install_command = commands.add_parser("install", help="install the emulator and write its ICD files")
    install_command.add_argument("--prefix", default=str(DEFAULT_PREFIX),
                                 help="virtual environment to install into (default: %(default)s)")
    install_command.add_argument("--system", action="store_true",
                                 help=f"also write {SYSTEM_VENDORS / ICD_NAME} (root) so that no variable is needed")
    commands.add_parser("status", help="list the OpenCL devices and say whether the emulator is one")
    args = parser.parse_args(argv)
    if args.command == "status":
        return 0 if status() else 1
    try:
        vendors = install(args.prefix, system=args.system)
    except (InstallError, OSError) as error:
        print(f"cnnfpga.emulator: install failed: {error}", file=sys.stderr)
        return 1
    if not args.system:
        print(f"export OCL_ICD_VENDORS={vendors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
