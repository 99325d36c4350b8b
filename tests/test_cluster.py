"""A classify run spread over a Dask LocalCluster of two worker processes gives the single-process run's
answers, and a worker killed mid-run still leaves every image in the output exactly once."""
import json
import os
import signal

import pytest

from cnnfpga import classify, cluster

from conftest import shared_path

if os.environ.get("CI"):   # .ci/run installs the test extra, which brings Dask
    import distributed
else:
    distributed = pytest.importorskip("distributed", reason="Dask is an optional extra: pip install '.[distributed]'")

NET = "cifar10_full.prototxt"


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local, \
            distributed.Client(local) as client:
        yield client


def answers(path) -> dict:
    lines = path.read_text().splitlines()
    records = {record["path"]: record for record in map(json.loads, lines)}
    assert len(records) == len(lines), "an image appears twice"
    return records


@pytest.mark.slow
def test_the_cluster_gives_the_single_process_answers(client, tmp_path):
    folder = shared_path("data", "cifar10_test_jpg")
    alone, spread = tmp_path / "alone.jsonl", tmp_path / "spread.jsonl"
    assert classify.classify_dataset([folder], NET, out=alone, batch=50, top=3) == 0
    assert classify.classify_dataset([folder], NET, out=spread, client=client, batch=50, top=3) == 0
    alone, spread = answers(alone), answers(spread)
    assert len(alone) == 1000 and alone.keys() == spread.keys()
    assert all(alone[path]["indices"] == spread[path]["indices"] for path in alone)
    workers_used = client.run(lambda: len(cluster._classifiers))
    assert sorted(workers_used.values()) == [1, 1]   # each worker built its net once, for all its batches


def test_a_worker_killed_mid_run_loses_nothing_and_repeats_nothing(client, tmp_path, monkeypatch):
    folder = shared_path("data", "cifar10_test_jpg", "cat")
    original, killed = cluster.cluster_batches, []

    def kill_a_worker_after_the_first_batch(client, args, paths):
        for results in original(client, args, paths):
            if not killed:   # SIGKILL: as abrupt as a crash; the nanny starts a new worker process
                victim = next(iter(client.run(os.getpid).values()))
                killed.append(victim)
                os.kill(victim, signal.SIGKILL)
            yield results

    monkeypatch.setattr(cluster, "cluster_batches", kill_a_worker_after_the_first_batch)
    out = tmp_path / "run.jsonl"
    assert classify.classify_dataset([folder], NET, out=out, client=client, batch=4) == 0
    assert killed and len(answers(out)) == 100
    assert killed[0] not in client.run(os.getpid).values()   # that process really died mid-run


def test_the_command_takes_a_scheduler_address(client, tmp_path, capsys):
    from cnnfpga.cli import main
    folder = shared_path("data", "cifar10_test_jpg", "ship")
    out = tmp_path / "run.jsonl"
    address = client.scheduler.address
    assert main(["classify", str(folder), "--net", NET, "--scheduler", address, "--out", str(out), "--quiet"]) == 0
    assert len(answers(out)) == 100 and capsys.readouterr().out == ""
    assert main(["classify", str(folder), "--net", NET, "--scheduler", "nonsense://x"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
