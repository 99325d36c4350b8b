"""Read Caffe nets: text prototxts (upgraded to the current format, TEST phase) and binary caffemodels.

Caffemodels are decoded by a small protobuf wire-format walker instead of caffe_pb2: going through
protobuf repeated fields costs seconds for AlexNet's 61M floats, while the packed `data` payloads can
be taken straight from a memory map with np.frombuffer.
"""
from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass

import numpy as np
from google.protobuf import text_format

from cnnfpga.caffe import caffe_pb2
from cnnfpga.errors import ModelFileError, NetDefinitionError, refuse_special_file

# V1LayerParameter.LayerType number -> (enum name, current Caffe type string).
V1_LAYER_TYPES: dict[int, tuple[str, str]] = {
    0: ("NONE", ""), 1: ("ACCURACY", "Accuracy"), 2: ("BNLL", "BNLL"), 3: ("CONCAT", "Concat"),
    4: ("CONVOLUTION", "Convolution"), 5: ("DATA", "Data"), 6: ("DROPOUT", "Dropout"),
    7: ("EUCLIDEAN_LOSS", "EuclideanLoss"), 8: ("FLATTEN", "Flatten"), 9: ("HDF5_DATA", "HDF5Data"),
    10: ("HDF5_OUTPUT", "HDF5Output"), 11: ("IM2COL", "Im2col"), 12: ("IMAGE_DATA", "ImageData"),
    13: ("INFOGAIN_LOSS", "InfogainLoss"), 14: ("INNER_PRODUCT", "InnerProduct"), 15: ("LRN", "LRN"),
    16: ("MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"), 17: ("POOLING", "Pooling"),
    18: ("RELU", "ReLU"), 19: ("SIGMOID", "Sigmoid"), 20: ("SOFTMAX", "Softmax"),
    21: ("SOFTMAX_LOSS", "SoftmaxWithLoss"), 22: ("SPLIT", "Split"), 23: ("TANH", "TanH"),
    24: ("WINDOW_DATA", "WindowData"), 25: ("ELTWISE", "Eltwise"), 26: ("POWER", "Power"),
    27: ("SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"), 28: ("HINGE_LOSS", "HingeLoss"),
    29: ("MEMORY_DATA", "MemoryData"), 30: ("ARGMAX", "ArgMax"), 31: ("THRESHOLD", "Threshold"),
    32: ("DUMMY_DATA", "DummyData"), 33: ("SLICE", "Slice"), 34: ("MVN", "MVN"), 35: ("ABSVAL", "AbsVal"),
    36: ("SILENCE", "Silence"), 37: ("CONTRASTIVE_LOSS", "ContrastiveLoss"), 38: ("EXP", "Exp"),
    39: ("DECONVOLUTION", "Deconvolution"),
}


@dataclass
class ParsedNet:
    path: str
    param: caffe_pb2.NetParameter  # current format: `layer` only, TEST-phase layers only
    layer_lines: list[int]  # 1-based line where param.layer[i] starts in the file


@dataclass
class CaffemodelLayer:
    name: str
    type: str  # current Caffe type string, also for V1 files
    blobs: list[np.ndarray]  # float32, in the shapes stored in the file


# ----------------------------------------------------------------------------- text prototxt

def read_prototxt(path) -> ParsedNet:
    path = os.fspath(path)
    text = _read_text(path)
    param = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, param)
    except text_format.ParseError as e:
        detail = re.sub(r"^\d+:\d+ : ", "", str(e))
        kind = "unknown field" if "has no field named" in detail else "syntax error"
        raise ModelFileError(f"{path}:{e.GetLine()}:{e.GetColumn()}: {kind}: {detail}") from None

    starts = _top_level_layer_lines(text)
    if param.layer and param.layers:
        raise ModelFileError(f"{path}: mixes current `layer {{}}` and V1 `layers {{}}` entries; use one kind")
    lines = starts["layers"] if param.layers else starts["layer"]
    if len(lines) != len(param.layer) + len(param.layers):
        raise ModelFileError(f"{path}: found {len(lines)} top-level layer entries in the text but the "
                             f"parser read {len(param.layer) + len(param.layers)}")
    if param.layers:
        _upgrade_v1(param, path, lines)
    return _filter_test_phase(param, path, lines)


def open_model_file(path: str, kind: str):
    """`path` opened for binary reading, or a ModelFileError saying why not (`kind`: ".prototxt", ...)."""
    refuse_special_file(path, ModelFileError, f"a {kind} file")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, expected a {kind} file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read: {e.strerror or e}") from None


def _read_text(path: str) -> str:
    with open_model_file(path, ".prototxt") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark some editors add is not part of the text
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ModelFileError(f"{path}:{line}: not UTF-8 text (byte {e.start}); a binary caffemodel "
                             f"given as the prototxt?") from None
    if not text.strip():
        raise ModelFileError(f"{path}: empty file")
    return text


# Tokens that matter for finding where layers start: strings and comments are skipped whole so
# that braces or the word `layer` inside them do not count.
_TOKEN = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|\#[^\n]*|\n|[{}<>\[\]]|[A-Za-z_]\w*""")


def _top_level_layer_lines(text: str) -> dict[str, list[int]]:
    """1-based start line of each top-level `layer`/`layers` entry (also `layer: [{...}, {...}]`)."""
    lines: dict[str, list[int]] = {"layer": [], "layers": []}
    line, depth, in_list = 1, 0, False
    key = None  # the layer key just read at depth 0, waiting for its `{` or `[`
    key_line = 0
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok == "\n":
            line += 1
        elif tok in "{<":
            if depth == 0 and key is not None:
                lines[key].append(line if in_list else key_line)
                if not in_list:
                    key = None
            depth += 1
        elif tok in "}>":
            depth -= 1
        elif depth == 0 and tok == "[":
            in_list = key is not None
        elif depth == 0 and tok == "]":
            in_list, key = False, None
        elif depth == 0 and not in_list and (tok[0].isalpha() or tok[0] == "_"):
            key, key_line = (tok, line) if tok in lines else (None, 0)
    return lines


def _upgrade_v1(param: caffe_pb2.NetParameter, path: str, lines: list[int]) -> None:
    """Rewrite V1 `layers {}` as `layer {}` in place (what Caffe's UpgradeV1Net does)."""
    new_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for v1, line in zip(param.layers, lines):
        layer = param.layer.add()
        for field, value in v1.ListFields():
            name = field.name
            if name in ("name", "bottom", "top", "blobs", "include", "exclude", "loss_weight"):
                if isinstance(value, str):
                    setattr(layer, name, value)
                else:
                    getattr(layer, name).extend(value)
            elif name == "type":
                layer.type = V1_LAYER_TYPES[value][1]
            elif name.endswith("_param") and name in new_fields:
                getattr(layer, name).CopyFrom(value)
            elif name in ("param", "blob_share_mode", "blobs_lr", "weight_decay"):
                attr = {"param": "name", "blob_share_mode": "share_mode",
                        "blobs_lr": "lr_mult", "weight_decay": "decay_mult"}[name]
                for i, v in enumerate(value):
                    while len(layer.param) <= i:
                        layer.param.add()
                    setattr(layer.param[i], attr, v)
            else:
                raise ModelFileError(f"{path}:{line}: V1 layer '{v1.name}': cannot upgrade field '{name}'")
    del param.layers[:]


def _rule_met(rule: caffe_pb2.NetStateRule, state: caffe_pb2.NetState) -> bool:
    """Caffe's StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(s not in state.stage for s in rule.stage):
        return False
    return not any(s in state.stage for s in rule.not_stage)


def _filter_test_phase(param: caffe_pb2.NetParameter, path: str, lines: list[int]) -> ParsedNet:
    """Drop layers that Caffe would not build in the TEST phase (level and stages from the file)."""
    state = caffe_pb2.NetState()
    state.CopyFrom(param.state)
    state.phase = caffe_pb2.TEST
    kept, kept_lines = [], []
    for layer, line in zip(param.layer, lines):
        if layer.include and layer.exclude:
            raise NetDefinitionError(f"{path}:{line} (layer '{layer.name}'): has both include and "
                                     f"exclude rules; Caffe allows only one kind")
        if layer.include:
            included = any(_rule_met(r, state) for r in layer.include)
        else:
            included = not any(_rule_met(r, state) for r in layer.exclude)
        if included:
            kept.append(layer)
            kept_lines.append(line)
    if len(kept) != len(param.layer):
        layers = [caffe_pb2.LayerParameter() for _ in kept]
        for dst, src in zip(layers, kept):
            dst.CopyFrom(src)
        del param.layer[:]
        param.layer.extend(layers)
    return ParsedNet(path=path, param=param, layer_lines=kept_lines)


# ----------------------------------------------------------------------------- binary caffemodel

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
# NetParameter fields a caffemodel may hold, with their wire types; anything else at the top level
# means the file is not a NetParameter (NetParameter has no other fields, so nothing is lost).
_NET_FIELDS = {1: _LEN, 2: _LEN, 3: _LEN, 4: _VARINT, 5: _VARINT, 6: _LEN, 7: _VARINT, 8: _LEN, 100: _LEN}
_BLOB_FIELDS = {1: _VARINT, 2: _VARINT, 3: _VARINT, 4: _VARINT, 5: _FIXED32, 6: _FIXED32, 7: _LEN,
                8: _FIXED64, 9: _FIXED64}


def read_caffemodel(path) -> list[CaffemodelLayer]:
    """Every layer of a .caffemodel (current `layer` or V1 `layers`), blobs as float32 arrays."""
    path = os.fspath(path)
    with open_model_file(path, ".caffemodel") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ModelFileError(f"{path}: empty file")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        try:
            layers = _Walker(path, buf).net()
        except ModelFileError:
            if _looks_like_text(buf):
                raise ModelFileError(f"{path}: this is a text file (a .prototxt?), not a binary "
                                     f".caffemodel") from None
            raise
    finally:
        buf.close()  # every array was copied out, so nothing still points into the map
    if not layers:
        raise ModelFileError(f"{path}: no layers in the file (not a caffemodel?)")
    return layers


def parse_blob(path: str, buf, start: int, end: int, where: str = "") -> np.ndarray:
    """Decode one BlobProto occupying buf[start:end] (used for mean .binaryproto files too)."""
    return _Walker(path, buf).blob(start, end, where)


def _looks_like_text(buf) -> bool:
    """UTF-8 without control characters in the first 512 bytes (a caffemodel has length bytes early)."""
    head = bytes(buf[:512])
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut in two at the end of the sample
            return False
        text = head[:e.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n" for c in text)


class _Walker:
    """Protobuf wire-format reader over a bytes-like buffer; errors name the file and byte offset."""

    def __init__(self, path: str, buf):
        self.path, self.buf = path, buf

    def fail(self, offset: int, what: str, where: str = ""):
        where = f" in {where}" if where else ""
        raise ModelFileError(f"{self.path}: byte {offset}{where}: {what}")

    def varint(self, pos: int, end: int, where: str) -> tuple[int, int]:
        buf, value, shift, start = self.buf, 0, 0, pos
        while True:
            if pos >= end:
                self.fail(start, "truncated varint (runs past the end of its message)", where)
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value, pos
            shift += 7
            if shift >= 70:
                self.fail(start, "varint longer than 10 bytes (corrupt data)", where)

    def field(self, pos: int, end: int, known: dict[int, int] | None, where: str):
        """Read the field at pos: (field number, wire type, value or (begin, end) span, next pos)."""
        tag_at = pos
        tag, pos = self.varint(pos, end, where)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            self.fail(tag_at, "field number 0 (corrupt data)", where)
        if wire == _VARINT:
            value, pos = self.varint(pos, end, where)
        elif wire == _LEN:
            length, pos = self.varint(pos, end, where)
            if pos + length > end:
                self.fail(tag_at, f"field {field} claims {length} bytes but only {end - pos} remain "
                                  f"(truncated file?)", where)
            value, pos = (pos, pos + length), pos + length
        elif wire in (_FIXED32, _FIXED64):
            width = 4 if wire == _FIXED32 else 8
            if pos + width > end:
                self.fail(tag_at, f"field {field} runs past the end (truncated file?)", where)
            value, pos = (pos, pos + width), pos + width
        else:
            self.fail(tag_at, f"invalid wire type {wire} for field {field} (corrupt data)", where)
        if known is not None:
            if field not in known:
                self.fail(tag_at, f"unexpected field {field} (not a caffemodel, or corrupt)", where)
            # A repeated scalar may also come packed, as one length-delimited field.
            if wire != known[field] and not (wire == _LEN and known[field] != _LEN):
                self.fail(tag_at, f"field {field} has wire type {wire}, expected {known[field]}", where)
        return field, wire, value, pos

    def fields(self, start: int, end: int, known: dict[int, int] | None, where: str):
        pos = start
        while pos < end:
            tag_at = pos
            field, wire, value, pos = self.field(pos, end, known, where)
            yield field, wire, value, tag_at

    def text(self, span: tuple[int, int], where: str) -> str:
        try:
            return bytes(self.buf[span[0]:span[1]]).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(span[0], "string is not UTF-8 (corrupt data)", where)

    def net(self) -> list[CaffemodelLayer]:
        layers = []
        for field, _, span, _ in self.fields(0, len(self.buf), _NET_FIELDS, "NetParameter"):
            if field in (2, 100):
                layers.append(self.layer(span, v1=field == 2, index=len(layers)))
        return layers

    def layer(self, span: tuple[int, int], v1: bool, index: int) -> CaffemodelLayer:
        name_field, type_field, blobs_field = (4, 5, 6) if v1 else (1, 2, 7)
        where = f"layer #{index}"
        name, type_, blob_spans = "", "", []
        pos = span[0]
        while pos < span[1]:
            tag_at = pos
            field, wire, value, pos = self.field(pos, span[1], None, where)  # `where` gains the name
            if field == name_field and wire == _LEN:
                name = self.text(value, where)
                where = f"layer #{index} '{name}'"
            elif field == type_field and v1 and wire == _VARINT:
                if value not in V1_LAYER_TYPES:
                    self.fail(tag_at, f"unknown V1 layer type number {value}", where)
                type_ = V1_LAYER_TYPES[value][1]
            elif field == type_field and not v1 and wire == _LEN:
                type_ = self.text(value, where)
            elif field == blobs_field and wire == _LEN:
                blob_spans.append(value)
            elif field in (name_field, type_field, blobs_field):
                self.fail(tag_at, f"field {field} has the wrong wire type {wire}", where)
        blobs = [self.blob(s, e, f"{where}, blob {i}") for i, (s, e) in enumerate(blob_spans)]
        return CaffemodelLayer(name=name, type=type_, blobs=blobs)

    def blob(self, start: int, end: int, where: str) -> np.ndarray:
        legacy = {}  # num/channels/height/width: field number -> value
        shape = None
        floats, doubles = [], []  # float32 copies of each data chunk, in file order
        pos = start
        while pos < end:
            tag_at = pos
            field, wire, value, pos = self.field(pos, end, _BLOB_FIELDS, where)
            if field in (1, 2, 3, 4):
                legacy[field] = _signed(value)
            elif field == 7:
                shape = self.dims(value, where)
            elif field in (5, 8):
                dtype = "<f4" if field == 5 else "<f8"
                if wire == _LEN:
                    chunk = self.packed(value, dtype, where)
                else:
                    chunk, pos = self.unpacked_run(tag_at, end, dtype)
                (floats if field == 5 else doubles).append(chunk)
        # Caffe's Blob::FromProto: any legacy dim present -> 4-D (num, channels, height, width).
        if legacy:
            shape = tuple(legacy.get(k, 0) for k in (1, 2, 3, 4))
        elif shape is None:
            shape = ()
        if any(d < 0 for d in shape):
            self.fail(start, f"negative dimension in shape {shape}", where)
        chunks = doubles if doubles else floats  # Caffe prefers double_data when both are present
        count, needed = sum(len(c) for c in chunks), int(np.prod(shape, dtype=np.int64))
        if count != needed:
            self.fail(start, f"{count} values but shape {shape} needs {needed}", where)
        if len(chunks) == 1:
            data = chunks[0]
        else:
            data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return data.reshape(shape)

    def packed(self, span: tuple[int, int], dtype: str, where: str) -> np.ndarray:
        start, stop = span
        width = np.dtype(dtype).itemsize
        if (stop - start) % width:
            self.fail(start, f"packed data of {stop - start} bytes is not a multiple of {width}", where)
        # Copy out of the map at once (astype copies): no view may outlive the map.
        return np.frombuffer(self.buf, dtype, (stop - start) // width, start).astype(np.float32)

    def unpacked_run(self, first: int, end: int, dtype: str) -> tuple[np.ndarray, int]:
        """Unpacked floats/doubles: `tag value` records back to back, taken in bulk.

        Returns the values of the run that starts at `first` and the position after it. The tag is one
        byte (0x2D for data, 0x41 for double_data), so a run is the records whose first byte is the tag.
        """
        width = np.dtype(dtype).itemsize
        record = 1 + width
        n = (end - first) // record
        records = np.frombuffer(self.buf, np.uint8, n * record, first).reshape(n, record)
        is_tag = records[:, 0] == records[0, 0]
        run = n if is_tag.all() else int(np.argmin(is_tag))
        values = records[:run, 1:].copy().view(dtype).reshape(run).astype(np.float32)
        return values, first + run * record

    def dims(self, span: tuple[int, int], where: str) -> tuple[int, ...]:
        dims = []
        for field, wire, value, tag_at in self.fields(span[0], span[1], {1: _VARINT}, where + " shape"):
            if wire == _LEN:  # packed
                pos, stop = value
                while pos < stop:
                    d, pos = self.varint(pos, stop, where + " shape")
                    dims.append(_signed(d))
            else:
                dims.append(_signed(value))
        return tuple(dims)


def _signed(v: int) -> int:
    """A varint read as int32/int64: negative numbers are sent as 64-bit two's complement."""
    return v - (1 << 64) if v >= 1 << 63 else v
