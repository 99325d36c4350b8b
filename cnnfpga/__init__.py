"""cnnfpga: Caffe nets run the way an FPGA streaming accelerator would.

prototxt -> graph -> placement (device / host) -> design -> kernels -> runtime -> outputs.
"""
from pathlib import Path as _Path

# In a source checkout (python run from the repository root), host/, kernels/ and prototxt/ sit beside this
# package rather than inside it as they do once installed; let `cnnfpga.host` etc. resolve to them there.
if (_Path(__file__).resolve().parent.parent / "kernels" / "__init__.py").exists():
    __path__.append(str(_Path(__file__).resolve().parent.parent))

from . import io  # noqa: E402
from .errors import (CnnfpgaError, DesignError, DeviceError, InputError, ModelFileError, NetDefinitionError,
                     PrecisionError, ResourceError, WeightsError)
from .graph import Graph, Layer, load_graph
from .net import TEST, TRAIN, Blob, Net

__all__ = ["Net", "Blob", "Graph", "Layer", "load_graph", "io", "TEST", "TRAIN", "CnnfpgaError", "DesignError",
           "DeviceError", "InputError", "ModelFileError", "NetDefinitionError", "PrecisionError", "ResourceError",
           "WeightsError"]
__version__ = "0.1.0"
