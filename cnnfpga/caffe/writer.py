"""Write .caffemodel and .binaryproto files in Caffe's current binary format.

The protobuf framing is built by hand so that float payloads go from numpy straight to the file
(an AlexNet-sized model would otherwise pass 61M floats through protobuf repeated fields). Files are
written under a temporary name in the target folder and renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

import numpy as np

from cnnfpga.errors import ModelFileError, WeightsError

_VARINT, _LEN = 0, 2
# Field numbers (see shared/docs/caffe_proto_fields.md).
_NET_NAME, _NET_LAYER = 1, 100
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
_BLOB_LEGACY_DIMS, _BLOB_DATA, _BLOB_SHAPE = (1, 2, 3, 4), 5, 7
_SHAPE_DIM = 1


def write_caffemodel(path, net_name: str, layers: Iterable[tuple[str, str, list[np.ndarray]]]) -> None:
    """Write a NetParameter with one `layer` (field 100) per (name, Caffe type string, blobs)."""
    path = os.fspath(path)
    with _atomic_file(path) as f:
        f.write(_string_field(_NET_NAME, net_name))
        for name, type_, blobs in layers:
            arrays = [_as_float32(b, path, f"layer '{name}', blob {i}") for i, b in enumerate(blobs)]
            blob_heads = [_blob_head(a) for a in arrays]
            body = _string_field(_LAYER_NAME, name) + _string_field(_LAYER_TYPE, type_)
            size = len(body) + sum(_len_field_size(_LAYER_BLOBS, len(h) + a.nbytes)
                                   for h, a in zip(blob_heads, arrays))
            f.write(_tag(_NET_LAYER, _LEN) + _varint(size) + body)
            for head, array in zip(blob_heads, arrays):
                f.write(_tag(_LAYER_BLOBS, _LEN) + _varint(len(head) + array.nbytes) + head)
                f.write(array)  # the raw little-endian floats, no copy


def write_binaryproto(path, array: np.ndarray) -> None:
    """Write one BlobProto (a mean file): legacy num/channels/height/width and the same 4-D `shape`."""
    path = os.fspath(path)
    array = _as_float32(array, path, "the array")
    if array.ndim > 4:
        raise WeightsError(f"{path}: a BlobProto holds at most 4 legacy dimensions, got shape {array.shape}")
    array = array.reshape((1,) * (4 - array.ndim) + array.shape)
    legacy = b"".join(_tag(f, _VARINT) + _varint(d) for f, d in zip(_BLOB_LEGACY_DIMS, array.shape))
    with _atomic_file(path) as f:
        f.write(legacy + _blob_head(array))
        f.write(array)  # the raw little-endian floats, no copy


def _blob_head(array: np.ndarray) -> bytes:
    """BlobProto bytes up to the raw float payload: `shape` (packed dims), then the `data` tag and length."""
    dims = b"".join(_varint(d) for d in array.shape)
    shape = _tag(_SHAPE_DIM, _LEN) + _varint(len(dims)) + dims if dims else b""
    head = _tag(_BLOB_SHAPE, _LEN) + _varint(len(shape)) + shape
    if array.size:  # protobuf leaves out an empty packed field
        head += _tag(_BLOB_DATA, _LEN) + _varint(array.nbytes)
    return head


def _as_float32(blob, path: str, what: str) -> np.ndarray:
    """Contiguous little-endian float32 (no copy when it already is)."""
    try:
        array = np.asarray(blob)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise TypeError(f"dtype {array.dtype}")
        return np.asarray(array, dtype="<f4", order="C")  # (ascontiguousarray would make 0-d 1-d)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: {what} is not a numeric array ({e})") from None


def _varint(n: int) -> bytes:
    n = int(n)
    if n < 0:
        n += 1 << 64  # int32/int64 negatives go out as 64-bit two's complement
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _string_field(field: int, text: str) -> bytes:
    raw = text.encode("utf-8")
    return _tag(field, _LEN) + _varint(len(raw)) + raw


def _len_field_size(field: int, payload: int) -> int:
    return len(_tag(field, _LEN)) + len(_varint(payload)) + payload


class _atomic_file:
    """Binary file written as a temp file in the same folder and renamed into place on success."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, self.tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(self.path) + ".",
                                            suffix=".tmp")
        except OSError as e:
            raise ModelFileError(f"{self.path}: cannot write: {e.strerror or e}") from None
        self.file = os.fdopen(fd, "wb")
        return self.file

    def __exit__(self, exc_type, exc, tb):
        try:
            self.file.close()
            if exc is None:
                os.chmod(self.tmp, 0o644)  # mkstemp makes 0600; a model file is meant to be shared
                os.replace(self.tmp, self.path)
        except OSError as e:
            exc = exc or e
        if exc is not None and os.path.exists(self.tmp):
            os.remove(self.tmp)
        if isinstance(exc, OSError):  # disk full, folder gone, ...: the caller sees our error type
            raise ModelFileError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
        return False
