"""``make bench``: run every benchmark, print its table, save results under bench/results/.

python -m bench [--quick] [--only NAME ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from bench.report import RESULTS

BENCHMARKS = {
    "motion": "bench.motion",
    "ringbuffer": "bench.ringbuffer",
    "mqtt_latency": "bench.mqtt_latency",
    "home_latency": "bench.home_latency",
    "ingest_throughput": "bench.ingest_throughput",
    "crypto_throughput": "bench.crypto_throughput",
    "request_matching": "bench.request_matching",
    "request_oracle": "bench.request_oracle",
    "clip_finalise": "bench.clip_finalise",
    "release_cycle": "bench.release_cycle",
    "log_proofs": "bench.log_proofs",
    "web_ring": "bench.web_ring",
    "slow_disk": "bench.slow_disk",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny inputs: checks the harness runs")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    args = ap.parse_args(argv)
    summary = []
    for name in args.only or list(BENCHMARKS):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        report = importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        report.show()
        report.save(args.out)
        summary.append(report.table())
        print(f"({name}: {time.monotonic() - t0:.1f} s)", file=sys.stderr)
    (args.out / "SUMMARY.md").write_text("\n\n".join(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
