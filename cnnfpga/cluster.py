"""A classify run spread over a Dask cluster: the client lists the images and writes the results, the
workers classify batches.

Each worker process builds its net once (the first batch it gets builds it; later batches reuse it) and
picks its own OpenCL device from its environment (`CNNFPGA_DEVICE=... dask worker ADDRESS`). A worker that
dies loses nothing: Dask runs its batches again on another worker, and the client writes each batch once,
when its result arrives. Paths (images, net, weights, design, labels, mean, calibration) must name the same files
on every worker: a shared file system, or the same layout on each machine. `dask[distributed]` is an
optional extra (`pip install 'cnnfpga[distributed]'`).
"""
import os
import threading

from .errors import InputError

# options of the command that the workers need to build the same classifier
NET_OPTIONS = ("net", "weights", "backend", "variant", "device", "design", "precision", "calibration", "mean",
               "channel_order", "raw_scale", "input_scale", "labels", "top", "batch")
PATH_OPTIONS = ("net", "weights", "design", "labels", "calibration", "mean")   # made absolute for the workers
BATCHES_PER_WORKER = 4   # in flight at once: enough to keep each worker busy, few enough to bound memory


def connect(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler needs Dask: pip install 'cnnfpga[distributed]'") from None
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as error:
        raise InputError(f"--scheduler {address}: cannot reach the Dask scheduler ({error})") from None


def worker_settings(args) -> dict:
    settings = {name: getattr(args, name) for name in NET_OPTIONS}
    for name in PATH_OPTIONS:   # a bundled net's name or mean values name no file here and stay as they are
        if settings[name] and os.path.exists(settings[name]):
            settings[name] = os.path.abspath(settings[name])
    return settings


_classifiers, _lock = {}, threading.Lock()


def classify_batch(settings: dict, paths: list) -> list:
    """Runs on a worker: this process's classifier for `settings` (built on first use) on one batch."""
    import argparse

    from .classify import prepare
    key = tuple(sorted(settings.items()))
    with _lock:   # one net per process, used by one task at a time (a worker may run several threads)
        if key not in _classifiers:
            _classifiers[key] = prepare(argparse.Namespace(**settings))
        return _classifiers[key].classify(paths)


def cluster_batches(client, args, paths: list):
    """Yield each batch's Results as the cluster finishes them (completion order), keeping a few batches
    per worker in flight."""
    from distributed import as_completed
    settings = worker_settings(args)
    chunks = [paths[start:start + args.batch] for start in range(0, len(paths), args.batch)]
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    pending = iter(chunks)
    in_flight, chunk_of = as_completed(), {}

    def submit(chunk):
        future = client.submit(classify_batch, settings, [os.path.abspath(path) for path in chunk], pure=False)
        chunk_of[future.key] = chunk
        in_flight.add(future)

    for chunk in pending:
        submit(chunk)
        if in_flight.count() >= workers * BATCHES_PER_WORKER:
            break
    for future in in_flight:
        results = future.result()
        for result, path in zip(results, chunk_of.pop(future.key)):   # the path as the user listed it
            result.path = path
        future.release()
        next_chunk = next(pending, None)
        if next_chunk is not None:
            submit(next_chunk)
        yield results
