"""The host inner-product cost model: its formula by hand, its cache, and its predictions against
real InnerProduct layers of AlexNet's shapes."""
import math
import time

import numpy as np
import pytest

from cnnfpga.design import host_model
from cnnfpga.design.host_model import HostModel, load_or_measure, measure
from cnnfpga.host.inner_product import InnerProduct

ALEXNET_FC = [(9216, 4096), (4096, 4096), (4096, 1000)]   # fc6, fc7, fc8: (in, out)
TOLERANCE = 2.0   # predicted / measured within [1/2, 2]


def fixed_model(threads=1) -> HostModel:
    return HostModel(stream_bandwidth=20e9, pack_bandwidth=5e9, flops=100e9, overhead=30e-6, threads=threads,
                     cpu="test CPU", blas="test BLAS", measured="2024-01-01")


def test_formula_by_hand():
    model = fixed_model()
    # fc6 at batch 1: 150,994,944 bytes streamed at 20 GB/s = 7.5497 ms, + 0.03 ms
    assert model.seconds(9216, 4096, 1) == pytest.approx(7.5797e-3, rel=1e-4)
    # batch 16: the same bytes copied at 5 GB/s = 30.1990 ms, 1.20796 Gflop at 100 Gflop/s = 12.0796 ms, + 0.03 ms
    assert model.seconds(9216, 4096, 16) == pytest.approx(42.3086e-3, rel=1e-4)
    assert model.layers_seconds(ALEXNET_FC, 16) == pytest.approx(sum(model.seconds(i, o, 16) for i, o in ALEXNET_FC))
    assert model.layers_seconds([], 4) == 0
    with pytest.raises(ValueError):
        model.seconds(10, 10, 0)


@pytest.fixture
def counted_measure(monkeypatch):
    """Replaces measure with a fixed model; the list records the thread count of each call."""
    calls = []

    def fake(threads):
        calls.append(threads)
        return fixed_model(threads)
    monkeypatch.setattr(host_model, "measure", fake)
    return calls


def test_cache_round_trip(tmp_path, monkeypatch, counted_measure):
    monkeypatch.setenv("CNNFPGA_CACHE", str(tmp_path))
    first = load_or_measure(threads=2)
    assert counted_measure == [2] and len(list(tmp_path.glob("*.json"))) == 1
    assert load_or_measure(threads=2) == first and counted_measure == [2]    # read back, not measured
    assert load_or_measure(threads=1).threads == 1 and counted_measure == [2, 1]   # its own entry
    assert len(list(tmp_path.glob("*.json"))) == 2


GOOD_JSON = fixed_model().to_json()


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"flops": 1e11}', b"\xff\xfe not UTF-8",
                                     GOOD_JSON.replace("100000000000.0", "NaN").encode(),
                                     GOOD_JSON.replace("100000000000.0", "-1").encode(),
                                     GOOD_JSON.replace("100000000000.0", '"fast"').encode()])
def test_corrupt_cache_is_measured_again(tmp_path, counted_measure, content):
    load_or_measure(cache=tmp_path)
    [path] = tmp_path.glob("*.json")
    path.write_bytes(content)
    assert load_or_measure(cache=tmp_path) == fixed_model() and counted_measure == [1, 1]
    assert HostModel.from_json(path.read_text()) == fixed_model()   # and written over


def fastest_in_order(layers, batch, passes=5) -> list:
    """The fastest of `passes` calls of each layer at `batch`, the layers called in order as a net
    calls them (fc6, fc7, fc8), so that none finds its weights in cache from its own last call."""
    rng = np.random.default_rng(2)
    inputs = [rng.random((batch, layer.num_input), dtype=np.float32) for layer in layers]
    fastest = [math.inf] * len(layers)
    for repeat in range(passes + 1):   # pass 0 warms up
        for i, (layer, x) in enumerate(zip(layers, inputs)):
            start = time.perf_counter()
            layer.forward(x, 1)
            if repeat:
                fastest[i] = min(fastest[i], time.perf_counter() - start)
    return fastest


def test_predictions_of_alexnet_fc_layers():
    model = measure(threads=1)
    rng = np.random.default_rng(1)
    # random weights built as W^T (in, out), which InnerProduct keeps without a transposing copy;
    # the runtime's default activation pruning finds every (non-zero) input live: the dense product
    layers = [InnerProduct(rng.random((i, o), dtype=np.float32).T, rng.random(o, dtype=np.float32))
              for i, o in ALEXNET_FC]
    report, bad = [], []
    for batch in (1, 16):
        measured = fastest_in_order(layers, batch)
        predicted = [model.seconds(i, o, batch) for i, o in ALEXNET_FC]
        rows = list(zip(("fc6", "fc7", "fc8"), predicted, measured))
        rows.append(("total", model.layers_seconds(ALEXNET_FC, batch), sum(measured)))
        for name, guess, actual in rows:
            ratio = guess / actual
            report.append(f"batch {batch:2d} {name:5s} predicted {guess * 1e3:7.2f} ms, measured "
                          f"{actual * 1e3:7.2f} ms, ratio {ratio:.2f}")
            if not 1 / TOLERANCE <= ratio <= TOLERANCE:
                bad.append(report[-1])
    print(f"\n{model}\n" + "\n".join(report))
    assert not bad, "\n".join(bad)
