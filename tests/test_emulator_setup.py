"""Intel's FPGA emulator: its installer's ICD files, `status`, and that only a name picks it.

The 300 MB install itself is not run here; CI runs it (.ci/run) before the tests, so there the emulator
must be visible.
"""
import os
from pathlib import Path
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pyopencl as cl
import pytest

from cnnfpga.emulator import ICD_NAME, emulator_visible, write_icd_folder
from cnnfpga.runtime import device as device_module

from conftest import require_emulator
from cnnfpga.runtime.device import is_emulator, select_device

ROOT = Path(__file__).resolve().parents[1]

POCL = ("Portable Computing Language", "pthread-skylake", cl.device_type.CPU)
EMULATOR = ("Intel(R) FPGA Emulation Platform for OpenCL(TM)", "Intel(R) FPGA Emulation Device",
            cl.device_type.ACCELERATOR)
BOARD = ("Intel(R) FPGA SDK for OpenCL(TM)", "de10_pro : Stratix 10 board", cl.device_type.ACCELERATOR)
GPU = ("NVIDIA CUDA", "H100", cl.device_type.GPU)


def fake_machine(monkeypatch, *platforms):
    """all_devices() answering one device for each (platform name, device name, type), in that order."""
    found = []
    for p, (platform_name, device_name, kind) in enumerate(platforms):
        platform = SimpleNamespace(name=platform_name, vendor=platform_name.split()[0])
        found.append((p, 0, platform, SimpleNamespace(name=device_name, platform=platform, type=kind)))
    monkeypatch.setattr(device_module, "all_devices", lambda: found)
    monkeypatch.delenv("CNNFPGA_DEVICE", raising=False)


@pytest.mark.parametrize("platforms, chosen", [
    ((EMULATOR, POCL), POCL),
    ((POCL, EMULATOR), POCL),
    ((EMULATOR, GPU, POCL), GPU),
    ((EMULATOR, POCL, BOARD), BOARD),   # a real board still comes first
    ((EMULATOR,), EMULATOR),            # the only device
])
def test_default_device_is_the_emulator_only_when_nothing_else_exists(monkeypatch, platforms, chosen):
    fake_machine(monkeypatch, *platforms)
    assert select_device().name == chosen[1]


def test_the_emulator_is_chosen_by_name_or_index(monkeypatch):
    fake_machine(monkeypatch, POCL, EMULATOR)
    assert is_emulator(select_device("FPGA Emulation"))
    assert is_emulator(select_device("1:0"))
    monkeypatch.setenv("CNNFPGA_DEVICE", "fpga emulation")
    assert is_emulator(select_device())
    assert not is_emulator(select_device("Portable"))


def test_is_emulator_tells_the_emulator_from_a_board(monkeypatch):
    fake_machine(monkeypatch, EMULATOR, BOARD, POCL)
    assert [is_emulator(device) for *_, device in device_module.all_devices()] == [True, False, False]


@pytest.mark.filterwarnings("ignore:Non-empty compiler output")   # the emulator's compiler chats
def test_fpga_emulation_picks_the_real_emulator_and_it_runs_a_kernel(monkeypatch):
    require_emulator()
    monkeypatch.delenv("CNNFPGA_DEVICE", raising=False)
    emulator = select_device("FPGA Emulation")
    assert is_emulator(emulator)
    assert not is_emulator(select_device())   # installed, yet not the default
    context = cl.Context([emulator])
    queue = cl.CommandQueue(context)
    program = cl.Program(context, "__kernel void twice(__global float *x) { x[get_global_id(0)] *= 2; }").build()
    values = np.arange(8, dtype=np.float32)
    buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=values)
    program.twice(queue, values.shape, None, buffer)
    cl.enqueue_copy(queue, values, buffer)
    assert values.tolist() == [2.0 * i for i in range(8)]


def test_icd_folder_holds_the_emulator_and_copies_of_the_system_files(tmp_path):
    system = tmp_path / "etc-vendors"
    system.mkdir()
    (system / "pocl.icd").write_text("libpocl.so.2.10.0")
    (system / "nvidia.icd").write_text("libnvidia-opencl.so.1\n")
    (system / ICD_NAME).write_text("/old/prefix/lib/libintelocl_emu.so\n")   # from an earlier --system
    (system / "README").write_text("not an ICD file")
    folder = tmp_path / "prefix" / "vendors"
    folder.mkdir(parents=True)
    (folder / "gone.icd").write_text("libgone.so\n")   # copied once, since removed from the system
    library = tmp_path / "prefix" / "lib" / "libintelocl_emu.so"

    assert write_icd_folder(folder, library, system_vendors=system) == folder
    assert sorted(path.name for path in folder.iterdir()) == [ICD_NAME, "nvidia.icd", "pocl.icd"]
    assert (folder / ICD_NAME).read_text() == f"{library}\n"
    assert (folder / "pocl.icd").read_text() == "libpocl.so.2.10.0"
    assert (folder / "nvidia.icd").read_text() == "libnvidia-opencl.so.1\n"
    write_icd_folder(folder, library, system_vendors=system)   # again: the same folder
    assert sorted(path.name for path in folder.iterdir()) == [ICD_NAME, "nvidia.icd", "pocl.icd"]


def run_status(**env):
    return subprocess.run([sys.executable, "-m", "cnnfpga.emulator", "status"], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, **env), timeout=120)


def test_status_exit_code_follows_visibility():
    result = run_status()
    assert result.returncode == (0 if emulator_visible() else 1), result.stdout + result.stderr
    for *_, device in device_module.all_devices():
        assert device.name.strip() in result.stdout


def test_status_without_the_emulator_says_how_to_install_it(tmp_path):
    result = run_status(OCL_ICD_VENDORS=str(tmp_path))   # an empty ICD folder: no platform at all
    assert result.returncode == 1, result.stderr
    assert "python3 -m cnnfpga.emulator install" in result.stdout
    assert "export OCL_ICD_VENDORS=" in result.stdout
