"""cnnfpga: Caffe nets run the way an FPGA streaming accelerator would.

prototxt -> graph -> partition (device / host) -> design -> kernels -> runtime -> outputs.
"""
from . import io
from .errors import (CnnfpgaError, DeviceError, InputError, ModelFileError, NetDefinitionError, PrecisionError,
                     ResourceError, WeightsError)
from .graph import Graph, Layer, load_graph
from .net import TEST, TRAIN, Blob, Net

__all__ = ["Net", "Blob", "Graph", "Layer", "load_graph", "io", "TEST", "TRAIN", "CnnfpgaError", "DeviceError",
           "InputError", "ModelFileError", "NetDefinitionError", "PrecisionError", "ResourceError", "WeightsError"]
__version__ = "0.1.0"
