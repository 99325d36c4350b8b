"""Mean images for input preprocessing: Caffe .binaryproto (a BlobProto) or numpy .npy."""
from __future__ import annotations

import mmap
import os

import numpy as np

from cnnfpga.caffe.reader import parse_blob
from cnnfpga.errors import ModelFileError, refuse_special_file


def load_mean(path) -> np.ndarray:
    """The mean as float32 (C, H, W); a leading num of 1 is dropped."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".binaryproto", ".npy"):
        raise ModelFileError(f"{path}: unknown mean file extension '{ext}' (expected .binaryproto or .npy)")
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory, expected a mean file")
    refuse_special_file(path, ModelFileError, "a mean file")
    try:
        if os.path.getsize(path) == 0:
            raise ModelFileError(f"{path}: empty file")
        mean = _read_binaryproto(path) if ext == ".binaryproto" else _read_npy(path)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read: {e.strerror or e}") from None
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3:
        raise ModelFileError(f"{path}: a mean must be (C, H, W) or (1, C, H, W), got shape {mean.shape}")
    return mean


def _read_binaryproto(path: str) -> np.ndarray:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return parse_blob(path, buf, 0, len(buf), "BlobProto")


def _read_npy(path: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:  # corrupt header, truncated data, pickled objects
        raise ModelFileError(f"{path}: not a readable .npy array: {e}") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number) \
            or np.issubdtype(array.dtype, np.complexfloating):
        raise ModelFileError(f"{path}: holds {getattr(array, 'dtype', type(array))} data, expected real numbers")
    return array.astype(np.float32)
