"""One error hierarchy. Every message names the file and, where there is one, the line or layer."""
import os


class CnnfpgaError(Exception):
    """Base class of every error cnnfpga raises on purpose."""


class ModelFileError(CnnfpgaError):
    """A prototxt, caffemodel or mean file that cannot be read (missing, empty, corrupt, bad syntax)."""


class NetDefinitionError(CnnfpgaError):
    """A net that parses but makes no sense: unknown layer type, dangling bottom, bad geometry."""


class WeightsError(CnnfpgaError):
    """Weights that do not fit the net (shape or count mismatch)."""


class ResourceError(CnnfpgaError):
    """A request that would need more memory than the machine has; refused before allocating."""


class PrecisionError(CnnfpgaError):
    """A precision setting that cannot work (zero bits, fractional bits out of range, unknown name)."""


class DeviceError(CnnfpgaError):
    """No usable OpenCL platform/device, or a kernel that fails to build."""


class InputError(CnnfpgaError):
    """An input image or array that cannot be fed to the net."""


class DesignError(CnnfpgaError):
    """A board file or hardware-model request that makes no sense: bad JSON, a missing or ill-typed field,
    an unknown board, a multiply wider than the board's DSP table."""


def refuse_special_file(path, error_type, expected: str) -> None:
    """A FIFO, socket or device named as an input file would block the read or never end: refuse it."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise error_type(f"{path}: not a regular file (a pipe or device), expected {expected}")
