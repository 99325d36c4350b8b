"""Bundled nets: a bare file name such as `alexnet.prototxt` resolves to the package's prototxt/ folder."""
from importlib import resources
import json
import os

from .errors import ModelFileError

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def bundled_folder():
    return resources.files("cnnfpga.prototxt")


def bundled_names() -> list:
    return sorted(p.name for p in bundled_folder().iterdir() if p.name.endswith((".prototxt", ".caffemodel")))


def resolve(path: str) -> str:
    """`path` itself when it exists, else the bundled file of that name; a clear error otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise ModelFileError(f"expected a file path (str or os.PathLike), got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if os.path.exists(path):
        return path
    candidate = bundled_folder() / os.path.basename(path)
    if os.path.dirname(path) == "" and candidate.is_file():
        return str(candidate)
    raise ModelFileError(f"{path}: no such file (bundled nets and weights: {', '.join(bundled_names())})")


def net_info(net_path: str) -> dict:
    """Preprocessing facts for a bundled net (empty for other nets, whatever their file name)."""
    if os.path.dirname(net_path) != str(bundled_folder()):   # as resolve() gives a bundled net's path
        return {}
    table = json.loads((bundled_folder() / "nets.json").read_text())
    return dict(table.get(os.path.basename(net_path), {}))


def bundled_weights(net_path: str):
    """The bundled trained weights that go with a bundled net, or None (any other net)."""
    name = net_info(net_path).get("weights")
    return str(bundled_folder() / name) if name else None
