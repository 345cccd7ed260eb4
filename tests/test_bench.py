"""The benchmark harness runs on tiny inputs and writes its results (no timing is asserted)."""

import json
import subprocess
import sys


def test_bench_quick_writes_every_table(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    from bench.__main__ import BENCHMARKS

    for name in BENCHMARKS:
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["rows"], name
        for row in data["rows"]:
            assert {"ours", "baseline", "baseline_name", "ratio"} <= row.keys()
        assert f"| {data['rows'][0]['metric']} |" in r.stdout
    assert (tmp_path / "SUMMARY.md").exists()
