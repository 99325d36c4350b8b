"""OpenCL runtime: device choice, program build and cache, the DeviceNet executor."""
from .device import select_device
from .executor import DeviceNet

__all__ = ["DeviceNet", "select_device"]
