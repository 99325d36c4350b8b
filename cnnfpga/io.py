"""Images in, net inputs out: `load_image` (Pillow) and a pycaffe-style `Transformer`."""
import glob
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError


def load_image(path: str, color: bool = True) -> np.ndarray:
    """Read an image as float32 in [0, 1], (H, W, 3) RGB when `color`, else (H, W, 1).

    Greyscale, palette, RGBA (alpha dropped onto black, as Caffe's OpenCV loader does), CMYK and
    16-bit images are converted; 16-bit values keep their full range before scaling to [0, 1].
    """
    if not os.path.exists(path):
        raise InputError(f"{path}: no such image file")
    if not os.path.isfile(path):   # a folder, or a FIFO or device that would block the read forever
        raise InputError(f"{path}: not a regular file")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit greyscale: keep precision
                grey = np.asarray(image, dtype=np.float32)
                grey = grey / (65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0)
                array = grey[..., None]
                return np.repeat(array, 3, axis=2) if color else array
            converted = image.convert("RGB" if color else "L")
    except Image.DecompressionBombError:   # Pillow's guard against a small file that decodes to gigabytes
        raise InputError(f"{path}: image too large ({Image.MAX_IMAGE_PIXELS * 2} pixels at most)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{path}: cannot read the image ({error})") from None
    array = np.asarray(converted, dtype=np.float32) / 255.0
    return array if color else array[..., None]


def resize_image(image: np.ndarray, size: tuple) -> np.ndarray:
    """Resize an (H, W, C) float image to (height, width) with bilinear filtering, channel by channel."""
    height, width = size
    channels = [np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize((width, height),
                                                                                                Image.BILINEAR))
                for c in range(image.shape[2])]
    return np.stack(channels, axis=2)


class Transformer:
    """Turns (H, W, C) RGB images in [0, 1] into net inputs (C, H, W), the way pycaffe's Transformer does.

    Order of operations in `preprocess`: resize to the input size, transpose, channel swap,
    raw scale, mean subtraction, input scale.
    """

    def __init__(self, inputs: dict):
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose, self.channel_swap, self.raw_scale, self.mean, self.input_scale = {}, {}, {}, {}, {}

    def _check(self, name):
        if name not in self.inputs:
            raise InputError(f"'{name}' is not an input of the net (inputs: {list(self.inputs)})")

    def set_transpose(self, name, order):
        self._check(name)
        self.transpose[name] = tuple(order)

    def set_channel_swap(self, name, order):
        self._check(name)
        self.channel_swap[name] = tuple(order)

    def set_raw_scale(self, name, scale):
        self._check(name)
        self.raw_scale[name] = float(scale)

    def set_input_scale(self, name, scale):
        self._check(name)
        self.input_scale[name] = float(scale)

    def set_mean(self, name, mean):
        """A per-channel mean (C,) or a mean image (C, H, W), in the net's channel order and value range."""
        self._check(name)
        mean = np.asarray(mean, dtype=np.float32)
        channels = self.inputs[name][1]
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise InputError(f"mean has {mean.shape[0]} values, input '{name}' has {channels} channels")
            mean = mean[:, None, None]
        elif mean.ndim != 3 or mean.shape[0] != channels:
            raise InputError(f"mean shape {list(mean.shape)} does not fit input '{name}' {list(self.inputs[name])}")
        self.mean[name] = mean

    def preprocess(self, name, image: np.ndarray) -> np.ndarray:
        self._check(name)
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 2:
            image = image[..., None]
        height, width = self.inputs[name][2:]
        if image.shape[:2] != (height, width):
            image = resize_image(image, (height, width))
        data = image.transpose(self.transpose[name]) if name in self.transpose else image
        if data.shape[0] != self.inputs[name][1]:   # e.g. RGBA or greyscale for a colour input
            raise InputError(f"the image has {data.shape[0]} channels (after transposing: {list(data.shape)}); input "
                             f"'{name}' takes {self.inputs[name][1]}")
        if name in self.channel_swap:
            data = data[list(self.channel_swap[name])]
        if name in self.raw_scale:
            data = data * self.raw_scale[name]
        if name in self.mean:
            mean = self.mean[name]
            if mean.shape[1:] not in ((1, 1), data.shape[1:]):
                mean = centre_crop(mean, data.shape[1:])
            data = data - mean
        if name in self.input_scale:
            data = data * self.input_scale[name]
        return np.ascontiguousarray(data, dtype=np.float32)

    def deprocess(self, name, data: np.ndarray) -> np.ndarray:
        self._check(name)
        image = np.array(data, dtype=np.float32)
        if name in self.input_scale:
            image /= self.input_scale[name]
        if name in self.mean:
            mean = self.mean[name]
            image += mean if mean.shape[1:] in ((1, 1), image.shape[1:]) else centre_crop(mean, image.shape[1:])
        if name in self.raw_scale:
            image /= self.raw_scale[name]
        if name in self.channel_swap:
            image = image[np.argsort(self.channel_swap[name])]
        if name in self.transpose:
            image = image.transpose(np.argsort(self.transpose[name]))
        return image


def centre_crop(mean: np.ndarray, size: tuple) -> np.ndarray:
    """The centre of a mean image (e.g. the 256x256 ImageNet mean for a 227x227 input)."""
    height, width = size
    if mean.shape[1] < height or mean.shape[2] < width:
        raise InputError(f"mean image {list(mean.shape)} is smaller than the input {height}x{width}")
    top, left = (mean.shape[1] - height) // 2, (mean.shape[2] - width) // 2
    return mean[:, top:top + height, left:left + width]


# what a folder or glob contributes; a file named on its own is tried whatever its extension
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


def list_images(specs) -> tuple:
    """(paths, problems) for image files, folders (searched recursively) and glob patterns.

    Paths come in the order given, each folder's and glob's sorted, every path once. `problems` are
    (spec, message) pairs for a spec that names nothing readable: a missing file, a folder or glob
    without images.
    """
    paths, problems, seen = [], [], set()

    def add(path):
        if path not in seen:
            seen.add(path)
            paths.append(path)

    def images_in(folder):
        found = []
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            found += [os.path.join(root, name) for name in sorted(files) if name.lower().endswith(IMAGE_EXTENSIONS)]
        return found

    for spec in specs:
        spec = os.fspath(spec)
        if os.path.isdir(spec):
            found = images_in(spec)
            what = "folder"
        elif glob.has_magic(spec) and not os.path.exists(spec):
            found = []
            for match in sorted(glob.glob(spec, recursive=True)):
                found += images_in(match) if os.path.isdir(match) else [match]
            found = [path for path in found if path.lower().endswith(IMAGE_EXTENSIONS)]
            what = "pattern"
        else:   # a file named on its own: load_image says what is wrong with it, if anything
            add(spec)
            continue
        if not found:
            problems.append((spec, f"{spec}: {what} with no images ({', '.join(IMAGE_EXTENSIONS)})"))
        for path in found:
            add(path)
    return paths, problems
