"""`cnnfpga classify` on real workloads: files, folders and globs in batches, broken images skipped and
reported, JSON lines, resumable --out files, every bad input one line; and the 1000 CIFAR-10 test JPEGs
through the command give the golden model's accuracy with memory bounded by the batch."""
import json
import os
from pathlib import Path
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from cnnfpga import classify
from cnnfpga.cli import main

from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
CAT = str(ROOT / "prototxt" / "chelsea.png")
QUICK = ["--net", "cifar10_quick.prototxt"]


def cli(capsys, *args):
    try:
        status = main(["classify", *map(str, args)])
    except SystemExit as exit:   # argparse
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def error_lines(err: str) -> list:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Twelve small good images in nested folders, in several formats and modes, and four broken files."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "sub" / "deeper").mkdir(parents=True)
    good = []
    for i in range(12):
        pixels = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        where = folder / ("sub" if i % 2 else "") / ("deeper" if i % 4 == 1 else "")
        name, mode = [("a{}.jpg", "RGB"), ("b{}.png", "RGBA"), ("c{}.bmp", "L"), ("d{}.gif", "P"),
                      ("e{}.tiff", "CMYK"), ("f{}.webp", "RGB")][i % 6]
        path = where / name.format(i)
        image.convert(mode).save(path)
        good.append(path)
    (folder / "text.jpg").write_text("not an image at all\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "sub" / "cut.jpg").write_bytes((folder / "a0.jpg").read_bytes()[:200])   # a truncated JPEG
    (folder / "notes.txt").write_text("ignored: not an image extension")
    return folder


def test_a_folder_with_broken_files_classifies_every_good_one(capsys, photo_folder):
    status, out, err = cli(capsys, photo_folder, *QUICK, "--json", "--batch", "5", "--top", "3")
    records = [json.loads(line) for line in out.splitlines()]
    answered = {Path(r["path"]).name for r in records if "error" not in r}
    failed = {Path(r["path"]).name for r in records if "error" in r}
    assert len(answered) == 12 and failed == {"text.jpg", "empty.png", "cut.jpg"}
    assert status == 1 and len(error_lines(err)) == 3 and "Traceback" not in err
    assert all(len(r["indices"]) == len(r["labels"]) == len(r["probabilities"]) == 3 for r in records
               if "error" not in r)
    assert all(r["probabilities"] == sorted(r["probabilities"], reverse=True) for r in records if "error" not in r)


def test_batches_and_padding_do_not_change_the_answers(capsys, photo_folder):
    """One image at a time, or 5 to a batch with the last batch padded: the same probabilities."""
    outputs = []
    for batch in ("1", "5"):
        status, out, err = cli(capsys, photo_folder, *QUICK, "--json", "--batch", batch)
        outputs.append({r["path"]: r for r in map(json.loads, out.splitlines())})
    assert outputs[0].keys() == outputs[1].keys()
    for path, record in outputs[0].items():
        if "error" not in record:
            assert record["indices"] == outputs[1][path]["indices"]
            np.testing.assert_allclose(record["probabilities"], outputs[1][path]["probabilities"], rtol=1e-4)


def test_files_globs_and_folders_are_listed_once_in_order(photo_folder):
    pattern = str(photo_folder / "sub" / "*.png")
    paths, problems = classify.list_images([CAT, str(photo_folder / "sub"), pattern, CAT])
    assert paths[0] == CAT and paths.count(CAT) == 1 and not problems
    in_sub = sorted(str(p) for p in (photo_folder / "sub").rglob("*.*"))
    assert len(in_sub) == 7 and sorted(paths[1:]) == in_sub
    paths, problems = classify.list_images([str(photo_folder / "nothing*.jpg")])
    assert paths == [] and "pattern with no images" in problems[0][1]


def test_classify_function_yields_results_per_batch():
    net = classify.Net("cifar10_quick.prototxt", classify.bundled.bundled_weights(
        classify.bundled.resolve("cifar10_quick.prototxt")))
    prep = classify.Preprocessing("RGB", 255, [125.27, 122.93, 113.86])
    classifier = classify.Classifier(net, classify.make_transformer(net, prep), classify.CIFAR10_LABELS, top=2, batch=2)
    batches = list(classify.classify_files(classifier, [CAT, "missing.png", CAT]))
    assert [len(b) for b in batches] == [2, 1]
    assert "cat" in batches[0][0].labels and "no such image file" in batches[0][1].error
    assert batches[1][0].probabilities == batches[0][0].probabilities


def net_with_vector_input(tmp_path) -> Path:
    path = tmp_path / "vector.prototxt"
    path.write_text('name: "vector"\nlayer { name: "data" type: "Input" top: "data" '
                    'input_param { shape { dim: 1 dim: 100 } } }\n'
                    'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                    'inner_product_param { num_output: 10 } }\n')
    return path


def bad_inputs(tmp_path) -> list:
    """(arguments, words the one error line must contain): the issue's list of bad CLI inputs, and more."""
    text_jpg, empty, corrupt = tmp_path / "text.jpg", tmp_path / "empty.jpg", tmp_path / "corrupt.jpg"
    text_jpg.write_text("hello")
    empty.write_bytes(b"")
    corrupt.write_bytes(Path(CAT).read_bytes()[:64])
    no_images = tmp_path / "no_images"
    no_images.mkdir()
    (no_images / "readme.txt").write_text("x")
    mean = tmp_path / "mean.npy"
    np.save(mean, np.zeros((3, 8, 8), np.float32))
    short_labels = tmp_path / "labels.txt"
    short_labels.write_text("a\nb\nc\n")
    precision = tmp_path / "precision.json"
    precision.write_text('{"conv1": "fixed8",}')
    lenet_weights = ROOT / "prototxt" / "lenet.caffemodel"
    return [
        ([tmp_path / "missing.jpg", *QUICK], "no such image file"),
        ([corrupt, *QUICK], "cannot read the image"),
        ([text_jpg, *QUICK], "cannot read the image"),
        ([empty, *QUICK], "cannot read the image"),
        ([no_images, *QUICK], "folder with no images"),
        ([CAT, *QUICK, "--mean", "1;2;3"], "finite numbers like"),
        ([CAT, *QUICK, "--mean", mean], "smaller than the input"),
        ([CAT, *QUICK, "--labels", short_labels], "names 3 classes, the net scores 10"),
        ([CAT, *QUICK, "--backend", "opencl", "--precision", "fixed"], "unknown precision"),
        ([CAT, *QUICK, "--backend", "opencl", "--precision", precision], "not valid JSON"),
        ([CAT, *QUICK, "--top", "0"], "expected a whole number >= 1"),
        ([CAT, *QUICK, "--batch", "0"], "expected a whole number >= 1"),
        ([CAT, "--net", net_with_vector_input(tmp_path)], "classify feeds one image input"),
        ([CAT, *QUICK, "--backend", "opencl", "--device", "no-such-device"], "no OpenCL device matches"),
        ([CAT, *QUICK, "--weights", lenet_weights], "needs [32, 3, 5, 5]"),
        ([CAT, "--net", tmp_path / "missing.prototxt"], "no such file"),
        ([CAT, *QUICK, "--channel-order", "GRB"], "invalid choice"),
        ([CAT, *QUICK, "--out", tmp_path], "not a regular file"),
        ([CAT, *QUICK, "--calibration", no_images, "--backend", "opencl", "--precision", "fixed8"],
         "folder with no images"),
    ]


def test_every_bad_input_is_one_error_line_and_a_failing_status(capsys, tmp_path):
    for args, words in bad_inputs(tmp_path):
        status, out, err = cli(capsys, *args)
        errors = error_lines(err)
        assert status != 0 and len(errors) == 1 and words in errors[0], (args, err)
        assert "Traceback" not in err, (args, err)


def test_options_users_expect(capsys):
    status, out, err = cli(capsys, CAT, "--net", "cifar10_full.prototxt", "--channel-order", "rgb", "--top", "1")
    assert status == 0 and "cat" in out and "preprocessing (your options, the rest from prototxt/nets.json" in err
    status, out, err = cli(capsys, CAT, "--net", "cifar10_full.prototxt", "--backend", "opencl", "--variant", "fast",
                           "--device", "pocl", "--top", "1")
    assert status == 0 and "cat" in out and "Portable Computing Language" not in err


def test_a_net_that_is_not_bundled_says_where_its_preprocessing_came_from(capsys):
    lenet = shared_path("models", "lenet", "lenet.prototxt")
    status, out, err = cli(capsys, CAT, "--net", lenet, "--top", "1")
    assert status == 0 and "preprocessing (defaults for a net that is not bundled): greyscale, raw scale 255" in err


def interrupt_after(batches: int):
    """classify_files that raises KeyboardInterrupt (Ctrl-C) after `batches` batches."""
    original = classify.classify_files

    def interrupted(*args, **kwargs):
        for k, results in enumerate(original(*args, **kwargs)):
            if k == batches:
                raise KeyboardInterrupt
            yield results
    return interrupted


def test_an_interrupted_run_resumed_gives_the_same_file(capsys, tmp_path, photo_folder, monkeypatch):
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    args = [photo_folder, *QUICK, "--batch", "3"]
    assert cli(capsys, *args, "--out", whole)[0] == 1   # the three broken files
    monkeypatch.setattr(classify, "classify_files", interrupt_after(2))
    status, out, err = cli(capsys, *args, "--out", resumed)
    assert status == 130 and len(resumed.read_text().splitlines()) == 6
    with open(resumed, "a") as handle:   # a process killed in the middle of a line
        handle.write('{"path": "' + str(photo_folder))
    monkeypatch.undo()
    status, out, err = cli(capsys, *args, "--out", resumed)
    assert status == 1 and "6 of 15 image(s) already done, 9 to go" in err
    assert resumed.read_text() == whole.read_text()
    lines = whole.read_text().splitlines()
    assert len(lines) == len({json.loads(line)["path"] for line in lines}) == 15
    status, out, err = cli(capsys, *args, "--out", resumed)   # nothing left: nothing added
    assert status == 0 and resumed.read_text() == whole.read_text()


def test_a_killed_process_resumed_leaves_every_image_once(tmp_path, photo_folder):
    out = tmp_path / "run.jsonl"
    command = [sys.executable, "-m", "cnnfpga", "classify", str(photo_folder), *QUICK, "--batch", "1",
               "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and not (out.exists() and out.stat().st_size):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert subprocess.run(command, capture_output=True).returncode == 1
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert len(paths) == len(set(paths)) == 15


def max_rss_of_run(args) -> tuple:
    """(stdout, peak resident memory in MiB of every child so far) of `python -m cnnfpga classify ARGS`."""
    result = subprocess.run([sys.executable, "-m", "cnnfpga", "classify", *map(str, args)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.stdout, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def top1(stdout: str) -> float:
    records = [json.loads(line) for line in stdout.splitlines()]
    assert len(records) == 1000
    return 100 * np.mean([r["labels"][0] == Path(r["path"]).parent.name for r in records])


@pytest.mark.slow
def test_cifar10_test_jpegs_through_the_command(tmp_path):
    """79.5 % top-1 as the golden model gives (tests/test_accuracy.py); fixed8 on the OpenCL kernels
    calibrated on 100 of the images within a point; peak memory the same for 100 and 1000 images."""
    folder = shared_path("data", "cifar10_test_jpg")
    few = tmp_path / "few"
    for name in sorted(os.listdir(folder)):
        (few / name).mkdir(parents=True)
        for image in sorted(os.listdir(folder / name))[:10]:
            shutil.copy(folder / name / image, few / name / image)
    args = ["--net", "cifar10_full.prototxt", "--json", "--batch", "50", "--no-progress"]
    _, small_peak = max_rss_of_run([few, *args])
    stdout, peak = max_rss_of_run([folder, *args])
    assert top1(stdout) == pytest.approx(79.5)
    assert peak < small_peak + 40, (small_peak, peak)   # one batch of all 1000 would add ~150 MiB
    stdout, _ = max_rss_of_run([folder, *args, "--backend", "opencl", "--precision", "fixed8",
                                "--calibration", folder / "*" / "00[0-9]0.jpg"])
    assert abs(top1(stdout) - 79.5) <= 1.0
