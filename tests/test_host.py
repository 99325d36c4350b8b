"""Host layers: the batched, pruned inner product and softmax, against plain numpy."""

import numpy as np
import pytest

from cnnfpga.errors import InputError, WeightsError
from cnnfpga.host.inner_product import InnerProduct, blas_controller, blas_threads, row_parts
from cnnfpga.host.softmax import softmax
from cnnfpga.layers import REGISTRY
from conftest import filler_graph

RNG = np.random.default_rng(7)


def post_relu(n, k, zero_fraction, dead_fraction=0.0):
    """Inputs like a ReLU's output: ~zero_fraction zeros per image, plus columns dead in every image."""
    x = RNG.normal(0, 1, (n, k)).astype(np.float32)
    x[RNG.random((n, k)) < zero_fraction] = 0.0
    x[:, RNG.random(k) < dead_fraction] = 0.0
    return np.maximum(x, 0.0)


def layer_weights(o, k):
    return RNG.normal(0, 0.05, (o, k)).astype(np.float32), RNG.normal(0, 0.1, o).astype(np.float32)


def test_dense_forward_matches_numpy():
    w, b = layer_weights(40, 300)
    x = RNG.normal(0, 1, (5, 300)).astype(np.float32)
    out = InnerProduct(w, b, prune_threshold=None).forward(x)
    assert out.dtype == np.float32 and out.shape == (5, 40)
    np.testing.assert_allclose(out, x @ w.T + b, rtol=1e-5, atol=1e-5)
    assert np.allclose(InnerProduct(w).forward(x), x @ w.T, atol=1e-5)


def test_pruning_exact_zeros_gives_the_dense_result_and_uses_the_gathered_path():
    w, b = layer_weights(64, 1000)
    x = post_relu(4, 1000, zero_fraction=0.5, dead_fraction=0.9)      # ~5% of columns live
    layer = InnerProduct(w, b, prune_threshold=0.0)
    out = layer.forward(x)
    np.testing.assert_allclose(out, x @ w.T + b, rtol=1e-5, atol=1e-5)
    assert layer.stats.gathered_calls == 1
    live = np.count_nonzero(np.abs(x).max(axis=0))
    assert layer.stats.live_fraction == pytest.approx(live / 1000)


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_gather_in_many_chunks_gives_the_dense_result(monkeypatch, threads):
    import cnnfpga.host.inner_product as module
    w, b = layer_weights(48, 500)
    monkeypatch.setattr(module, "GATHER_CHUNK_BYTES", 48 * 4 * 7)     # 7 rows a chunk: many chunks
    layer = InnerProduct(w, b)
    x = post_relu(2, 500, zero_fraction=0.3, dead_fraction=0.9)       # ~10% of the rows live
    np.testing.assert_allclose(layer.forward(x, threads), x @ w.T + b, rtol=1e-5, atol=1e-5)
    assert layer.stats.gathered_calls == 1 and 7 < layer.stats.live_columns < 150


def test_pruning_skips_the_gather_when_most_columns_are_live():
    w, b = layer_weights(16, 200)
    layer = InnerProduct(w, b)
    x = post_relu(8, 200, zero_fraction=0.3)
    np.testing.assert_allclose(layer.forward(x), x @ w.T + b, rtol=1e-5, atol=1e-5)
    assert layer.stats.gathered_calls == 0 and layer.stats.live_fraction > 0.9


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_nothing_live_gives_the_bias(threads):
    w, b = layer_weights(20, 50)
    out = InnerProduct(w, b).forward(np.zeros((3, 50), np.float32), threads)
    np.testing.assert_array_equal(out, np.broadcast_to(b, (3, 20)))


def test_negative_inputs_are_never_skipped():
    # a column that is negative in every image carries signal: the threshold is on the magnitude
    w, b = layer_weights(8, 100)
    x = np.zeros((3, 100), dtype=np.float32)
    x[:, 5] = -2.0
    x[1, 17] = 0.5
    np.testing.assert_allclose(InnerProduct(w, b).forward(x), x @ w.T + b, rtol=1e-5, atol=1e-6)


def test_positive_threshold_drops_small_inputs():
    w, b = layer_weights(8, 100)
    x = np.full((2, 100), 0.01, dtype=np.float32)
    x[:, :3] = 1.0
    out = InnerProduct(w, b, prune_threshold=0.05).forward(x)
    kept = x.copy()
    kept[:, 3:] = 0.0
    np.testing.assert_allclose(out, kept @ w.T + b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_magnitude_pruning_zeroes_exactly_the_smallest(fraction):
    w, b = layer_weights(30, 70)
    layer = InnerProduct(w, b, weight_prune_fraction=fraction)
    expected = round(fraction * w.size)
    kept = layer.weights_t.T
    assert layer.pruned_weights == expected
    assert np.count_nonzero(kept == 0) == expected
    assert layer.weight_sparsity == pytest.approx(expected / w.size)
    zeroed = kept == 0
    assert np.abs(w[zeroed]).max() <= np.abs(w[~zeroed]).min()     # the smallest magnitudes went
    assert np.array_equal(kept[~zeroed], w[~zeroed])
    x = post_relu(3, 70, 0.5)
    np.testing.assert_allclose(layer.forward(x), x @ np.where(zeroed, 0, w).T + b, rtol=1e-5, atol=1e-5)


def test_batch_sizes_give_the_same_per_image_results():
    w, b = layer_weights(50, 800)
    images = post_relu(32, 800, zero_fraction=0.7, dead_fraction=0.85)
    layer = InnerProduct(w, b)
    singles = np.concatenate([layer.forward(images[i:i + 1]) for i in range(32)])
    for batch in (8, 32):
        batched = np.concatenate([layer.forward(images[i:i + batch]) for i in range(0, 32, batch)])
        np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-5)
    assert layer.stats.images == 32 * 3 and layer.stats.calls == 32 + 4 + 1
    assert layer.stats.seconds > 0


@pytest.mark.parametrize("zero_fraction,dead_fraction", [(0.3, 0.0), (0.5, 0.95)])   # dense, gathered
def test_split_over_threads_gives_the_same_results(zero_fraction, dead_fraction):
    w, b = layer_weights(1000, 600)
    layer = InnerProduct(w, b)
    for batch in (1, 5):
        x = post_relu(batch, 600, zero_fraction, dead_fraction)
        single = layer.forward(x, 1)
        np.testing.assert_allclose(layer.forward(x), single, rtol=1e-5, atol=1e-6)   # BLAS's own threads
        for threads in (2, 3, 64):
            split = layer.forward(x, threads)
            np.testing.assert_allclose(split, single, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(layer.forward(x, threads), split)   # the same threads: the same bits
    assert (layer.stats.gathered_calls > 0) == (dead_fraction > 0)


@pytest.mark.parametrize("rows,parts", [(1000, 2), (9216, 2), (3, 4), (17, 3), (4096, 7)])
def test_row_parts_cover_every_row_once(rows, parts):
    assert row_parts(0, parts) == [(0, 0)]
    ranges = row_parts(rows, parts)
    assert len(ranges) == min(rows, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == rows
    assert all(stop == start for (_, stop), (start, _) in zip(ranges, ranges[1:]))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_blas_threads_limits_inside_and_restores_after():
    controller = blas_controller()
    if not controller.lib_controllers:
        pytest.skip("no BLAS thread pool that threadpoolctl can control")

    def get():
        return max(lib.num_threads for lib in controller.lib_controllers)

    before = get()
    with blas_threads(1):
        assert get() == 1
        with blas_threads(max(2, before)):
            assert get() == 1            # the tightest limit in force applies
        assert get() == 1
    assert get() == before


def test_flattens_4d_input_and_refuses_wrong_sizes():
    w, b = layer_weights(10, 2 * 3 * 3)
    x = RNG.normal(0, 1, (4, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(InnerProduct(w, b).forward(x), x.reshape(4, -1) @ w.T + b, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="fc9.*17"):
        InnerProduct(w, b, name="fc9").forward(np.zeros((2, 17), np.float32))
    with pytest.raises(WeightsError):
        InnerProduct(w, b[:3])
    with pytest.raises(WeightsError):
        InnerProduct(w, b, weight_prune_fraction=1.0)
    with pytest.raises(WeightsError):
        InnerProduct(w.reshape(-1), b)


@pytest.mark.parametrize("transpose", [False, True])
def test_from_layer_matches_the_graph_reference(tmp_path, transpose):
    path = tmp_path / "fc.prototxt"
    path.write_text(f"""
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 3 dim: 4 dim: 2 dim: 2 }} }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param {{ num_output: 5 transpose: {str(transpose).lower()} }} }}
""")
    graph = filler_graph(path)
    layer = graph.layer("fc")
    x = RNG.normal(0, 1, (3, 4, 2, 2)).astype(np.float32)
    expected = REGISTRY["InnerProduct"].reference(layer.spec, [x], layer.blobs)[0]
    np.testing.assert_allclose(InnerProduct.from_layer(layer).forward(x), expected, rtol=1e-5, atol=1e-6)


def test_softmax_is_stable_and_normalised():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]], dtype=np.float32)
    p = softmax(x)
    assert np.all(np.isfinite(p)) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    e = np.exp(np.array([0.0, 1.0, -1.0]))
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(p[1], 1 / 3, rtol=1e-6)
    blob = RNG.normal(0, 3, (2, 4, 3, 3)).astype(np.float32)     # Caffe's softmax is over channels
    q = softmax(blob, axis=1)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(q, REGISTRY["Softmax"].reference(
        REGISTRY["Softmax"].parse(_softmax_param(), [blob.shape]), [blob], [])[0], rtol=1e-5, atol=1e-7)


def _softmax_param():
    from cnnfpga.caffe import caffe_pb2
    param = caffe_pb2.LayerParameter()
    param.type = "Softmax"
    return param
