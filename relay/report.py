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
    bys_kinds: Counter[str] = Counter()
    bys_outcomes: Counter[str] = Counter()
    bys_after: Counter[str] = Counter()
    for e in window:
        d = e["data"]
        if e["kind"] == "bystander_request":
            bys_kinds[d.get("kind", "?")] += 1
        elif e["kind"] == "bystander_answer":
            bys_outcomes[d.get("answer", "?")] += 1
            bys_after[_answer_bucket(d.get("after_h"))] += 1
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
        # Passers-by's requests (issue 17): counted apart from agencies' requests.
        "bystander": {
            "requests": sum(bys_kinds.values()),
            "requests_by_kind": dict(bys_kinds),
            "refused_by_policy": kinds["bystander_refused"],
            "answers_by_outcome": dict(bys_outcomes),
            "time_to_answer": {b: bys_after[b] for b in ANSWER_BUCKETS if bys_after[b]},
            # Requests, not asks: every accepted request gets one of each, whatever it
            # matched (per ask they would tell a bystander that a home was asked).
            "reminders": kinds["bystander_reminder"],
            "expired": kinds["bystander_expired"],
        },
    }


ANSWER_BUCKETS = ("within a day", "within a week", "within 30 days", "later")


def _answer_bucket(after_h: Any) -> str:
    """>>> _answer_bucket(3), _answer_bucket(200), _answer_bucket(None)
    ('within a day', 'within 30 days', 'later')
    """
    if not isinstance(after_h, int | float):
        return "later"
    for limit, name in zip((24, 7 * 24, 30 * 24), ANSWER_BUCKETS, strict=False):
        if after_h < limit:
            return name
    return "later"


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


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
        "Passers-by's requests: "
        + _counts(r["bystander"]["requests_by_kind"])
        + "; answers: "
        + _counts(r["bystander"]["answers_by_outcome"])
        + "; time to answer: "
        + _counts(r["bystander"]["time_to_answer"])
        + f"; requests past their deadline: {r['bystander']['expired']}.",
        "",
        f"Policy: radius at most {r['policy']['max_radius_m']:g} m, window at most "
        f"{r['policy']['max_window_s'] / 3600:g} h, at most {r['policy']['max_per_day']:g} "
        "requests per requester organisation per day.",
    ]
    return "\n".join(lines) + "\n"
