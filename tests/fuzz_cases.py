"""Generated bad inputs, one category per child process (run by tests/test_fuzz.py):

    python tests/fuzz_cases.py CATEGORY COUNT SEED RESULTS.jsonl

Each case is made from a seeded generator, run, and its outcome appended to RESULTS as one JSON line
*before* the next case starts ("started" first, then the outcome), so that the parent can name the case
that crashed or hung the process. Outcomes: "ok" (it ran), "refused" (a CnnfpgaError, or argparse's
exit 2), "raw" (any other exception: a bug, with its traceback), "hang" (over the per-case limit).
"""
import contextlib
import io
import json
from pathlib import Path
import random
import resource
import signal
import sys
import tempfile
import traceback
import warnings

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "prototxt"
CASE_SECONDS = 30
MEMORY_CAP = 6 * 2**30


class Hang(BaseException):
    """The per-case limit (a BaseException, so that no `except Exception` in the code under test hides it)."""


def on_alarm(signum, frame):
    raise Hang()


# ---------------------------------------------------------------------------------------- generators

ODD_NUMBERS = ["0", "-1", "-7", "2147483648", "4294967297", "9223372036854775807", "99999999999999999999", "1e30",
               "-1e30", "nan", "inf", "-inf", "3.5", "1e-40", "65536", "100000"]
ODD_TEXT = ["", " ", "\x00", "é", "../../etc/passwd", "data", "prob", "conv1", "nosuch", "x" * 300]


def mutate_text(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    kind = rng.randrange(9)
    if kind == 0:   # a number replaced by an odd one
        numbers = [i for i, line in enumerate(lines) if any(c.isdigit() for c in line)]
        i = rng.choice(numbers)
        words = lines[i].split(" ")
        digits = [k for k, w in enumerate(words) if any(c.isdigit() for c in w)]
        k = rng.choice(digits)
        words[k] = rng.choice(ODD_NUMBERS) + ("\n" if words[k].endswith("\n") else "")
        lines[i] = " ".join(words)
    elif kind == 1:   # a line deleted
        del lines[rng.randrange(len(lines))]
    elif kind == 2:   # a line repeated
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif kind == 3:   # a quoted string replaced
        quoted = [i for i, line in enumerate(lines) if '"' in line]
        i = rng.choice(quoted)
        start = lines[i].index('"')
        end = lines[i].index('"', start + 1)
        lines[i] = lines[i][:start + 1] + rng.choice(ODD_TEXT).replace('"', "") + lines[i][end:]
    elif kind == 4:   # cut short
        return text[:rng.randrange(len(text))]
    elif kind == 5:   # bytes that are not text
        i = rng.randrange(len(lines))
        lines[i] = lines[i][:3] + "\udcff\ufffd\x07" + lines[i][3:]
    elif kind == 6:   # two lines swapped
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == 7:   # a layer type changed
        typed = [i for i, line in enumerate(lines) if "type:" in line]
        i = rng.choice(typed)
        new = rng.choice(["Bogus", "Convolution", "Pooling", "LRN", "ReLU", "InnerProduct", "Softmax", "Concat",
                          "Eltwise", "BatchNorm", "Scale", "Dropout", "Flatten", "Reshape", "Input", "CONVOLUTION"])
        lines[i] = lines[i][:lines[i].index("type:")] + f'type: "{new}"\n'
    else:   # a parameter block's field set to an odd value
        i = rng.randrange(len(lines))
        field = rng.choice(["kernel_size", "stride", "pad", "num_output", "group", "local_size", "alpha", "beta",
                            "dilation", "axis", "pool", "eps", "negative_slope", "dim"])
        lines.insert(i, f"  {field}: {rng.choice(ODD_NUMBERS)}\n")
    return "".join(lines)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(data[:rng.randrange(len(data))])
    if kind == 1:
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:
        i = rng.randrange(len(data))
        return bytes(data[:i] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) + data[i:])
    if kind == 3:
        i = rng.randrange(len(data))
        return bytes(data[:i] + b"\xff" * 8 + data[i + 8:])
    i, j = sorted(rng.randrange(len(data)) for _ in range(2))
    return bytes(data[:i] + bytes(j - i) + data[j:])


def weird_image(folder: Path, rng: random.Random, number: int) -> Path:
    from PIL import Image
    kind = rng.randrange(8)
    path = folder / f"image{number}.{rng.choice(['png', 'jpg', 'bmp', 'gif', 'tiff', 'webp'])}"
    if kind <= 3:   # a real image's bytes, damaged
        base = (BUNDLED / "chelsea.png").read_bytes() if kind < 2 else _jpeg_bytes()
        path.write_bytes(mutate_bytes(base, rng))
    elif kind == 4:   # random bytes
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2000))))
    elif kind == 5:   # odd but valid images: 1x1, long and thin, 16-bit, modes
        size = rng.choice([(1, 1), (1, 500), (500, 1), (3, 7)])
        mode = rng.choice(["L", "RGB", "RGBA", "P", "I;16", "1", "CMYK", "LA", "I", "F"])
        image = Image.new(mode, size)
        try:
            image.save(path)
        except (OSError, ValueError, KeyError):   # a format that cannot hold this mode: TIFF holds them all
            path = path.with_suffix(".tiff")
            image.save(path)
    elif kind == 6:   # a PNG whose header claims an enormous size (a decompression bomb)
        png = bytearray((BUNDLED / "chelsea.png").read_bytes())
        png[16:24] = (rng.choice([30000, 100000, 2**31 - 1])).to_bytes(4, "big") * 2
        path = path.with_suffix(".png")
        path.write_bytes(bytes(png))
    else:   # not a file at all
        path = folder / f"dir{number}.jpg"
        path.mkdir()
    return path


def _jpeg_bytes() -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.open(BUNDLED / "chelsea.png").convert("RGB").resize((64, 48)).save(buffer, "JPEG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ categories

def case_prototxt(rng: random.Random, folder: Path, number: int):
    import cnnfpga
    name = rng.choice(["lenet.prototxt", "cifar10_quick.prototxt", "cifar10_full.prototxt", "squeezenet_v1.1.prototxt"])
    path = folder / f"net{number}.prototxt"
    path.write_text(mutate_text((BUNDLED / name).read_text(), rng), errors="surrogateescape")
    net = cnnfpga.Net(str(path))
    if name != "squeezenet_v1.1.prototxt":
        net.forward()
    return name


def case_caffemodel(rng: random.Random, folder: Path, number: int):
    import cnnfpga
    name = rng.choice(["lenet", "cifar10_quick"])
    path = folder / f"weights{number}.caffemodel"
    path.write_bytes(mutate_bytes((BUNDLED / f"{name}.caffemodel").read_bytes(), rng))
    cnnfpga.Net(f"{name}.prototxt", str(path)).forward()
    return name


def case_image(rng: random.Random, folder: Path, number: int):
    image = weird_image(folder, rng, number)
    net = rng.choice(["lenet.prototxt", "cifar10_quick.prototxt"])
    return cli(["classify", str(image), "--net", net, "--json"])


CLI_OPTIONS = {
    "--top": ["0", "-1", "x", "1e3", "99999", ""], "--batch": ["0", "-5", "a", "100000000000", "1.5"],
    "--mean": ["", ",", "1,2", "1,2,3,4", "a,b,c", "nan,1,2", "1e400,0,0", "/nonexistent.npy", "{dir}", "{binary}"],
    "--raw-scale": ["nan", "-inf", "x", "1e400", "0", "-1"], "--input-scale": ["inf", "", "0", "-3"],
    "--channel-order": ["rgba", "", "bgr", "GBR"], "--labels": ["{dir}", "{binary}", "/nonexistent", "{empty}"],
    "--precision": ["fixed0", "fixed99", "fixed8.9", "half", "{", '{"*": 3}', '{"conv1": "fixed-1"}', "{dir}",
                    "{binary}", '{"nosuch": "fixed8"}', "fixed16.40"],
    "--backend": ["gpu", "", "opencl"], "--variant": ["slow", "fast"], "--device": ["", "9:9", "nosuch", "0:0"],
    "--weights": ["{binary}", "{dir}", "/nonexistent", "{empty}", "lenet.caffemodel"],
    "--net": ["{binary}", "{dir}", "/nonexistent", "{empty}", "lenet.prototxt", "nosuch.prototxt"],
    "--calibration": ["{dir}", "{binary}", "/nonexistent/*.jpg", "{empty}"], "--out": ["{dir}", "{binary}"],
}


def case_cli(rng: random.Random, folder: Path, number: int):
    places = {"{dir}": str(folder), "{binary}": str(folder / "binary.bin"), "{empty}": str(folder / "empty.txt")}
    argv = ["classify", str(BUNDLED / "chelsea.png"), "--net", "cifar10_quick.prototxt"]
    for option in rng.sample(sorted(CLI_OPTIONS), rng.randrange(1, 4)):
        value = rng.choice(CLI_OPTIONS[option])
        argv += [option, places.get(value, value)]
    return cli(argv)


API_VALUES = {
    "backend": [None, 5, "x", "opencl", "reference", 1.0],
    "precision": [5, [], {"conv1": 5}, "fixed0", "fixed99", {"*": "half"}, {"conv1": "float", "*": "fixed8"}, None,
                  "fixed8", b"fixed8", {"*": None}],
    "calibration": [np.zeros((2, 1, 28, 28)), np.ones((2, 3)), "nosuch.json", {"data": "x"}, [1, 2], 5,
                    {"data": np.full((1, 1, 28, 28), np.inf)}, np.ones((1, 1, 28, 28))],
    "parallelism": [{"conv1": "x"}, {"conv1": (0, 1, 1)}, {"conv1": (1000, 1, 1)}, {"conv1": (1, 1)}, 5, [],
                    {"conv1": {"ci": -1}}, {"conv1": {"bogus": 1}}, {"pool1": (1, 1, 1)}],
    "device": [5, "", "nosuch", "0:0", ["0:0"]], "variant": ["fast", "turbo", None, 3],
    "prune_threshold": [-1, "x", float("nan"), None, 1e9], "host_threads": [0, -1, "x", 1.5, 1],
    "stall_seconds": [0, -1, "x", float("inf")], "seed": ["x", -1, 2**70, None],
    "weights": [5, "", "lenet.prototxt", "nosuch.caffemodel"],
}
FORWARD_DATA = [None, np.zeros((1, 1, 28, 28)), np.zeros((3, 1, 28, 28), np.float64), np.zeros((1, 1, 28, 28), bool),
                np.zeros((2, 1, 32, 32)), "x", [[1.0]], np.full((1, 1, 28, 28), np.nan), np.zeros((1, 1, 28, 28), object)]


def case_api(rng: random.Random, folder: Path, number: int):
    import cnnfpga
    kwargs = {"backend": "opencl"} if rng.random() < 0.5 else {}   # most options only apply to OpenCL
    for option in rng.sample(sorted(API_VALUES), rng.randrange(1, 4)):
        kwargs[option] = rng.choice(API_VALUES[option])
    weights = kwargs.pop("weights", "lenet.caffemodel")
    net = cnnfpga.Net("lenet.prototxt", weights, **kwargs)
    data = rng.choice(FORWARD_DATA)
    net.forward() if data is None else net.forward(data=data)
    return repr(sorted(kwargs))


CATEGORIES = {"prototxt": case_prototxt, "caffemodel": case_caffemodel, "image": case_image, "cli": case_cli,
              "api": case_api}


def cli(argv) -> int:
    from cnnfpga.cli import main
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            status = main(argv)
    except SystemExit as exit:   # argparse: exit 2 with one line
        status = exit.code
    if "Traceback" in err.getvalue():
        raise AssertionError(f"a traceback on stderr: {err.getvalue()[-2000:]}")
    if status not in (0, 1, 2):
        raise AssertionError(f"exit status {status}")
    if status == 2:
        raise Refused()
    return status


class Refused(Exception):
    """A clear refusal (exit status 2) from the command."""


def main():
    category, count, seed, results = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    signal.signal(signal.SIGALRM, on_alarm)
    warnings.simplefilter("ignore")
    from cnnfpga import CnnfpgaError
    with tempfile.TemporaryDirectory() as scratch, open(results, "a") as out:
        folder = Path(scratch)
        (folder / "binary.bin").write_bytes(bytes(range(256)) * 4)
        (folder / "empty.txt").write_bytes(b"")
        for number in range(count):
            rng = random.Random(f"{category}-{seed}-{number}")
            out.write(json.dumps({"case": number, "status": "started"}) + "\n")
            out.flush()
            signal.alarm(CASE_SECONDS)
            try:
                detail = CATEGORIES[category](rng, folder, number)
                status = "ok"
            except (CnnfpgaError, Refused) as error:
                status, detail = "refused", str(error)[:200]
            except Hang:
                status, detail = "hang", f"over {CASE_SECONDS} s"
            except Exception:   # noqa: BLE001 -- the point: any other exception is a finding
                status, detail = "raw", traceback.format_exc()[-3000:]
            finally:
                signal.alarm(0)
            out.write(json.dumps({"case": number, "status": status, "detail": str(detail)}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
