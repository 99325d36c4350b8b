"""Readers for the test data in ../shared/data: MNIST idx.gz files and the CIFAR-10 test JPEGs.

Plain functions returning numpy arrays; the tests decide on preprocessing.
"""
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# idx file magic numbers: 0x0000 08 0N = unsigned bytes, N dimensions
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 0x0803, 0x0801


def read_idx(path: Path, magic: int, count: int) -> np.ndarray:
    """The first `count` records of a gzipped idx file, as uint8 with the file's record shape."""
    with gzip.open(path, "rb") as f:
        header_magic = int.from_bytes(f.read(4), "big")
        if header_magic != magic:
            raise ValueError(f"{path}: idx magic {header_magic:#06x}, expected {magic:#06x}")
        ndim = magic & 0xFF
        dims = [int.from_bytes(f.read(4), "big") for _ in range(ndim)]
        count = min(count, dims[0])
        record = int(np.prod(dims[1:], dtype=np.int64))
        data = np.frombuffer(f.read(count * record), dtype=np.uint8)
    return data.reshape([count] + dims[1:])


def mnist_test(folder: Path, count: int = 1000) -> tuple:
    """(images uint8 (N, 28, 28), labels int64 (N,)) from the MNIST test set, first `count` of them."""
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC, count)
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC, count)
    return images, labels.astype(np.int64)


def cifar_files(folder: Path) -> tuple:
    """(paths, labels): every <class>/NNNN.jpg under `folder`, class index from the folder name."""
    paths, labels = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        for path in sorted((folder / name).glob("*.jpg")):
            paths.append(path)
            labels.append(label)
    return paths, np.array(labels, dtype=np.int64)


def cifar_rgb(paths: list) -> np.ndarray:
    """The JPEGs decoded by Pillow as uint8 (N, 32, 32, 3) RGB."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    return np.stack(images)
