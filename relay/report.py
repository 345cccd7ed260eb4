"""The transparency report: what was asked, decided and released, from the audit log.

Computed from the log alone, so anyone holding a verified copy of the log can
produce the same numbers.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

OWN_PLAYBACK = "view-"
"""Request ids of an owner's own view (``footage view``, the web app's playback): a
release to the owner's own key (the relay refuses any other), so no release to anyone."""


def build_report(
    entries: list[dict[str, Any]], start: float, end: float, policy: dict[str, float]
) -> dict[str, Any]:
    window = [e for e in entries if start <= e["at"] < end]
    kinds = Counter(e["kind"] for e in window)
    by_requester: Counter[str] = Counter()
    by_basis: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    own = 0  # an owner watching their own clip is no release to anyone else
    for e in window:
        d = e["data"]
        if e["kind"] == "release" and str(d.get("request", "")).startswith(OWN_PLAYBACK):
            own += 1
        if e["kind"] == "request":
            by_requester[e["actor"]] += 1
            by_basis[d.get("basis", "?")] += 1
        elif e["kind"] == "request_refused":
            refusals[d.get("refusal", "?")] += 1
        elif e["kind"] == "decision":
            decisions[d.get("decision", "?")] += 1
    return {
        "from": start,
        "to": end,
        "policy": policy,
        "requests": sum(by_requester.values()),
        "requests_by_requester": dict(by_requester),
        "requests_by_basis": dict(by_basis),
        "refused_by_policy": dict(refusals),
        # Asks are not on the record one by one (that would say how many homes a
        # request reached); those that concluded are: a decision or an expiry each.
        "asks": kinds["ask"] + kinds["decision"] + kinds["ask_expired"],
        "approvals": decisions["approve"],
        "denials": decisions["deny"],
        "expired": kinds["ask_expired"],
        "clips_released": kinds["release"] - own,
        "legal_demands": kinds["legal_demand"],
        "deletions": kinds["deletion"],
        "log_entries": len(window),
    }


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def to_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Transparency report, {_day(r['from'])} to {_day(r['to'])}",
        "",
        "| | |",
        "|---|---|",
        f"| footage requests | {r['requests']} |",
        f"| refused by policy | {sum(r['refused_by_policy'].values())} |",
        f"| owners asked | {r['asks']} |",
        f"| approved by owners | {r['approvals']} |",
        f"| denied by owners | {r['denials']} |",
        f"| unanswered (expired, a no) | {r['expired']} |",
        f"| clips released | {r['clips_released']} |",
        f"| legal demands | {r['legal_demands']} |",
        f"| clips deleted | {r['deletions']} |",
        "",
        "Requests by requester: "
        + (", ".join(f"{k} {v}" for k, v in sorted(r["requests_by_requester"].items())) or "none"),
        "",
        "Requests by legal basis: "
        + (", ".join(f"{k} {v}" for k, v in sorted(r["requests_by_basis"].items())) or "none"),
        "",
        "Refusals: "
        + (", ".join(f"{k} ({v})" for k, v in r["refused_by_policy"].items()) or "none"),
        "",
        f"Policy: radius at most {r['policy']['max_radius_m']:g} m, window at most "
        f"{r['policy']['max_window_s'] / 3600:g} h, at most {r['policy']['max_per_day']:g} "
        "requests per requester organisation per day.",
    ]
    return "\n".join(lines) + "\n"
