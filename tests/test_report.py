import subprocess
import sys

from relay.report import build_report, to_markdown

ENTRIES = [
    {"at": 100, "kind": "request", "actor": "police", "data": {"basis": "consent"}},
    {"at": 110, "kind": "request", "actor": "police", "data": {"basis": "legal-demand"}},
    {
        "at": 120,
        "kind": "request_refused",
        "actor": "nosy",
        "data": {"refusal": "radius must be within 250 m"},
    },
    {"at": 140, "kind": "decision", "actor": "alice", "data": {"decision": "approve"}},
    {"at": 150, "kind": "release", "actor": "door", "data": {}},
    {"at": 160, "kind": "legal_demand", "actor": "operator", "data": {}},
    {"at": 999, "kind": "request", "actor": "late", "data": {"basis": "consent"}},
]
POLICY = {"max_radius_m": 250.0, "max_window_s": 21600.0, "max_per_day": 5.0}


def test_report_counts_the_period_only():
    r = build_report(ENTRIES, 0, 500, POLICY)
    assert r["requests"] == 2 and r["requests_by_basis"] == {"consent": 1, "legal-demand": 1}
    assert r["refused_by_policy"] == {"radius must be within 250 m": 1}
    assert (r["asks"], r["approvals"], r["clips_released"], r["legal_demands"]) == (1, 1, 1, 1)
    md = to_markdown(r)
    assert "| footage requests | 2 |" in md and "250 m" in md


def test_report_cli_rejects_a_backwards_period(stack):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay.cli",
            "--config",
            str(stack.config_file),
            "report",
            "--from",
            "2026-02-01",
            "--to",
            "2026-01-01",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "before --to" in r.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay.cli",
            "--config",
            str(stack.config_file),
            "report",
            "--from",
            "2026-01-01",
            "--to",
            "2027-01-01",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert '"requests": 0' in ok.stdout
