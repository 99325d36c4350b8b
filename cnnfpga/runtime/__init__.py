"""OpenCL runtime: device choice, program build and cache, the DeviceNet executor."""
from .device import select_device
from .executor import DeviceNet, half_error_bound

__all__ = ["DeviceNet", "half_error_bound", "select_device"]
