"""The fuzz harness: generated bad inputs per category (prototxt and caffemodel mutations, damaged and odd
images, bad command-line options, bad API arguments), each category in a child process with a 6 GB
address-space cap and a per-case time limit (tests/fuzz_cases.py). Fails on any exception that is not a
CnnfpgaError (or argparse's one-line exit), any hang and any crash."""
import collections
import json
from pathlib import Path
import subprocess
import sys

import pytest

CASES = Path(__file__).resolve().parent / "fuzz_cases.py"
COUNTS = {"prototxt": 90, "caffemodel": 60, "image": 60, "cli": 60, "api": 60}   # 330 per run
SEED = 1


def run_category(category: str, count: int, tmp_path) -> list:
    results = tmp_path / f"{category}.jsonl"
    done = subprocess.run([sys.executable, str(CASES), category, str(count), str(SEED), str(results)],
                          capture_output=True, text=True, timeout=900)
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    outcomes = [r for r in records if r["status"] != "started"]
    started = [r["case"] for r in records if r["status"] == "started"]
    if done.returncode != 0 or len(outcomes) != count:
        crashed = started[-1] if started else None
        pytest.fail(f"{category}: the child process died (status {done.returncode}) in case {crashed}: "
                    f"{done.stderr[-3000:]}")
    return outcomes


@pytest.mark.slow
def test_no_generated_bad_input_ends_in_a_traceback_a_hang_or_a_crash(tmp_path, capsys):
    findings, summary = [], []
    for category, count in COUNTS.items():
        outcomes = run_category(category, count, tmp_path)
        tally = collections.Counter(r["status"] for r in outcomes)
        summary.append(f"{category} {count}: " + ", ".join(f"{tally[s]} {s}" for s in ("ok", "refused", "raw", "hang")))
        findings += [f"{category} case {r['case']} ({r['status']}): {r['detail']}" for r in outcomes
                     if r["status"] in ("raw", "hang")]
    with capsys.disabled():
        print("\nfuzz (seed %d): %s" % (SEED, "; ".join(summary)))
    assert sum(COUNTS.values()) >= 300
    assert not findings, "\n\n".join(findings[:10]) + f"\n\n({len(findings)} findings)"
