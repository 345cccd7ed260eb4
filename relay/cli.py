"""``relay``: run the relay and operate it.  This module only parses and prints;
the work is done by the services in :mod:`relay.services`.

    relay serve [--workers N]                  the HTTP API and ingestion workers
    relay ingest [--workers N] [--name N]      ingestion workers only
    relay devices add ID --owner NAME --lat LAT --lon LON
    relay devices list|show ID|revoke ID|rotate ID [--json]
    relay owners add NAME --keys DIR           prints the owner's API token once
    relay requesters add NAME --kind K --pubkey FILE [--org ORG]
    relay owners|requesters revoke|rotate NAME   API tokens: revoke ends them at once
    relay policy show|set                      the bounds every request must stay within
    relay legal-demand record --docket D --authority A (--org ORG | --request ID)
    relay clips list [--device ID] [--since T] [--until T] [--near LAT,LON --radius M] [--json]
    relay deadletters [--count N] [--json]
    relay audit verify|proof N|list|key        the tamper-evident log
    relay report --from T --to T [--json]      the transparency report
    relay status [--json]

Every command reads ``--config FILE`` (or $RELAY_CONFIG).  Bad arguments print one
line and exit 2; an unreachable Redis or broker prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import redis
    from rich.console import Console
    from rich.table import Table
except ModuleNotFoundError as err:  # the relay part is not installed here
    sys.exit(f"relay: {err.name} is missing: install the relay with: pip install '.[relay]'")

from common.cli import (
    EXIT_NO_SPACE,
    UsageParser,
    disk_full,
    no_space_message,
    number,
    parse_time,
    positive,
)
from relay.config import RelayConfigError, load_relay_config
from relay.index import Near
from relay.services import BadSetting as UsageError
from relay.services import Relay, Unavailable

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 1


def parse_latlon(s: str) -> tuple[float, float]:
    try:
        lat_s, lon_s = s.split(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAT,LON like 51.5,-0.12; got {s!r}") from None
    _check_latlon(lat, lon)
    return lat, lon


def _check_latlon(lat: float, lon: float) -> None:
    if not -85.05 <= lat <= 85.05:
        raise argparse.ArgumentTypeError(f"latitude must be within ±85.05 (got {lat})")
    if not -180 <= lon <= 180:
        raise argparse.ArgumentTypeError(f"longitude must be within ±180 (got {lon})")


def _lat(s: str) -> float:
    v = number(s)
    _check_latlon(v, 0)
    return v


def _lon(s: str) -> float:
    v = number(s)
    _check_latlon(0, v)
    return v


def _iso(ts: float | str | None) -> str:
    if ts in (None, ""):
        return "-"
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog="relay",
        description="The open doorbell relay: indexes clip metadata from doorbells and lets "
        "operators manage the fleet. It never holds footage keys.",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("RELAY_CONFIG"),
        help="relay TOML config (default: $RELAY_CONFIG, else built-in defaults)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what the relay does")
    sub = p.add_subparsers(dest="command", required=True, parser_class=UsageParser)

    ing = sub.add_parser("ingest", help="run ingestion workers (MQTT → Redis)")
    ing.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ing.add_argument(
        "--name", default=None, help="worker name (default: the host name; unique per worker)"
    )
    ing.add_argument("--seconds", type=positive, help="stop after this many seconds")
    ing.add_argument(
        "--retire",
        action="store_true",
        help="when stopped, end this worker's broker session so the others take its share "
        "(scaling down; without it the session waits for the worker to restart)",
    )
    srv = sub.add_parser("serve", help="run the relay: the HTTP API and ingestion workers")
    srv.add_argument("--workers", type=int, default=1, help="ingestion worker processes")
    srv.add_argument("--seconds", type=positive, help="stop after this many seconds")

    own = sub.add_parser("owners", help="register doorbell owners")
    osub = own.add_subparsers(dest="owners_command", required=True, parser_class=UsageParser)
    oadd = osub.add_parser("add", help="register an owner; prints their API token once")
    oadd.add_argument("name")
    oadd.add_argument(
        "--keys",
        type=Path,
        required=True,
        help="the owner's key folder (from footage keys new); only sign.pub and box.pub are read",
    )
    _credential_commands(osub, "owner")
    req = sub.add_parser("requesters", help="register who may ask for footage")
    rsub = req.add_subparsers(dest="requesters_command", required=True, parser_class=UsageParser)
    _credential_commands(rsub, "requester")
    radd = rsub.add_parser("add", help="register a requester; prints its API token once")
    radd.add_argument("name")
    radd.add_argument("--kind", choices=("agency", "neighbour", "owner"), required=True)
    radd.add_argument(
        "--org", help="its organisation: accounts of one organisation share its daily limit"
    )
    radd.add_argument(
        "--pubkey",
        type=Path,
        required=True,
        help="the requester's X25519 public key (box.pub from footage keys new)",
    )
    pol = sub.add_parser("policy", help="the bounds every request must stay within")
    psub = pol.add_subparsers(dest="policy_command", required=True, parser_class=UsageParser)
    psub.add_parser("show", help="print the policy (JSON)")
    pset = psub.add_parser("set", help="change bounds (audited)")
    pset.add_argument("--max-radius-m", type=positive)
    pset.add_argument("--max-window-h", type=positive)
    pset.add_argument("--max-per-day", type=positive, help="per requester organisation")
    pset.add_argument("--min-radius-m", type=positive)
    pset.add_argument(
        "--retention-days", type=positive, help="how far back a request's window may start"
    )
    pset.add_argument(
        "--bystander-max-window-h", type=positive, help="the longest window a bystander may ask"
    )
    ld = sub.add_parser("legal-demand", help="record a legal demand (the owners are told)")
    ldsub = ld.add_subparsers(dest="ld_command", required=True, parser_class=UsageParser)
    ldr = ldsub.add_parser(
        "record", help="put a demand on file for an organisation, or record it against a request"
    )
    target = ldr.add_mutually_exclusive_group(required=True)
    target.add_argument("--org", help="the requester organisation that may name it")
    target.add_argument("--request", help="a request the demand concerns")
    ldr.add_argument("--docket", required=True)
    ldr.add_argument("--authority", required=True)

    dev = sub.add_parser("devices", help="register, list and revoke doorbells")
    dsub = dev.add_subparsers(dest="devices_command", required=True, parser_class=UsageParser)
    add = dsub.add_parser("add", help="register a doorbell: broker account + provisioning bundle")
    add.add_argument("id", help="device id: lower-case letters, digits, dashes")
    add.add_argument("--owner", required=True, help="the owner's name")
    add.add_argument("--lat", type=_lat, required=True, help="latitude of the doorbell")
    add.add_argument("--lon", type=_lon, required=True, help="longitude of the doorbell")
    add.add_argument("--out", type=Path, help="bundle path (default: bundles_dir/ID.json)")
    add.add_argument(
        "--cert",
        action="store_true",
        help="also issue a client certificate from the relay's CA (for the TLS listener)",
    )
    add.add_argument("--json", action="store_true")
    ls = dsub.add_parser("list", help="list doorbells")
    ls.add_argument("--json", action="store_true")
    show = dsub.add_parser("show", help="one doorbell in detail")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    rev = dsub.add_parser(
        "revoke", help="remove a doorbell's broker account, revoke its certificates, cut it off"
    )
    rev.add_argument("id")
    rot = dsub.add_parser("rotate", help="a new broker password and provisioning bundle")
    rot.add_argument("id")
    rot.add_argument("--out", type=Path, help="where the new bundle goes")
    rot.add_argument(
        "--cert",
        action="store_true",
        help="also a new client certificate; the old ones are revoked (CRL) and cut off",
    )

    clips = sub.add_parser("clips", help="clip metadata the relay has indexed")
    csub = clips.add_subparsers(dest="clips_command", required=True, parser_class=UsageParser)
    cl = csub.add_parser("list", help="list clips, oldest first")
    cl.add_argument("--device")
    cl.add_argument("--since", type=parse_time, help="ISO 8601 time or Unix seconds")
    cl.add_argument("--until", type=parse_time, help="ISO 8601 time or Unix seconds")
    cl.add_argument("--near", type=parse_latlon, metavar="LAT,LON")
    cl.add_argument("--radius", type=positive, metavar="M", help="metres, with --near")
    cl.add_argument("--limit", type=int, default=1000)
    cl.add_argument("--json", action="store_true")

    dl = sub.add_parser("deadletters", help="messages refused as malformed, newest first")
    dl.add_argument("--count", type=int, default=20)
    dl.add_argument("--json", action="store_true")

    au = sub.add_parser("audit", help="the tamper-evident log of everything the relay did")
    asub = au.add_subparsers(dest="audit_command", required=True, parser_class=UsageParser)
    av = asub.add_parser("verify", help="recompute the whole log; name the first bad entry")
    av.add_argument("--json", action="store_true")
    ap_ = asub.add_parser("proof", help="an inclusion proof of one entry (JSON)")
    ap_.add_argument("entry", type=int, help="the entry's index (0 is the first)")
    al = asub.add_parser("list", help="show entries")
    al.add_argument("--last", type=int, default=20, help="how many of the newest (default 20)")
    al.add_argument("--json", action="store_true")
    asub.add_parser("key", help="print the relay's public key that signs tree heads")

    rep = sub.add_parser("report", help="the transparency report for a period")
    rep.add_argument("--from", dest="start", type=parse_time, required=True)
    rep.add_argument("--to", dest="end", type=parse_time, required=True)
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--md", action="store_true", help="Markdown (the default)")

    st = sub.add_parser("status", help="is everything up: broker, Redis, workers, counts")
    st.add_argument("--json", action="store_true")
    return p


# ---------------------------------------------------------------- helpers


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# ---------------------------------------------------------------- commands


def cmd_devices(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    if args.devices_command == "add":
        done = relay.registry.add(args.id, args.owner, args.lat, args.lon, args.out, cert=args.cert)
        result = {
            "device": done.device,
            "bundle": str(done.bundle),
            "broker_reloaded": done.broker_reloaded,
        }
        if args.json:
            _print_json(result)
        else:
            out.print(
                f"registered [bold]{done.device}[/] for {args.owner}; bundle: {done.bundle} "
                "(secret: copy it to the doorbell, then delete it)"
            )
            if not done.broker_reloaded:
                out.print("[yellow]broker not reloaded[/]: send it SIGHUP so the account works")
        return 0

    index = relay.index
    if args.devices_command == "list":
        devices = index.devices()
        if args.json:
            _print_json(devices)
            return 0
        table = Table("id", "owner", "lat", "lon", "online", "last seen", "clips", "revoked")
        for d in devices:
            table.add_row(
                d["id"],
                d.get("owner", ""),
                d.get("lat", ""),
                d.get("lon", ""),
                "yes" if d.get("online") == "1" else "no",
                _iso(d.get("last_seen")),
                str(d["clips"]),
                "" if d.get("revoked", "0") == "0" else "revoked",
            )
        out.print(table if devices else "no devices")
        return 0
    if args.devices_command == "show":
        d = index.device(args.id)
        if d is None:
            raise UsageError(f"no device {args.id!r}")
        if args.json:
            _print_json(d)
        else:
            for k, v in d.items():
                out.print(f"{k:10} {_iso(v) if k in ('created', 'last_seen', 'status_ts') else v}")
        return 0
    if args.devices_command == "rotate":
        done = relay.registry.rotate(args.id, args.out, cert=args.cert)
        out.print(
            f"rotated {done.device}; new bundle: {done.bundle} (copy it to the doorbell)"
            + ("" if done.broker_reloaded else "; send the broker SIGHUP")
        )
        return 0
    if args.devices_command == "revoke":
        gone = relay.registry.revoke(args.id)
        out.print(
            f"revoked {args.id}"
            + ("" if gone.had_account else " (it had no broker account)")
            + (f"; {gone.certificates} certificate(s) in the CRL" if gone.certificates else "")
            + ("" if gone.cut_off else "; could not reach the broker to end its session")
            + ("" if gone.broker_reloaded else "; send the broker SIGHUP")
        )
        return 0
    raise AssertionError(args.devices_command)


def cmd_clips(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    if (args.near is None) != (args.radius is None):
        raise UsageError("--near and --radius go together")
    if args.since is not None and args.until is not None and args.since > args.until:
        raise UsageError("--since is after --until")
    near = Near(args.near[0], args.near[1], args.radius) if args.near else None
    clips = relay.index.clips(args.device, args.since, args.until, near, args.limit)
    if args.json:
        _print_json(clips)
        return 0
    if not clips:
        out.print("no clips")
        return 0
    table = Table("device", "clip", "start (UTC)", "trigger", "length", "size")
    for c in clips:
        start = datetime.fromisoformat(c["start"].replace("Z", "+00:00")).timestamp()
        table.add_row(
            c["device"],
            c["clip_id"],
            _iso(start),
            c["trigger"],
            f"{c['duration_s']:.1f}s",
            f"{c['size'] / 1e6:.2f} MB",
        )
    out.print(table)
    return 0


def cmd_deadletters(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    rows = relay.index.dead_letters(args.count)
    if args.json:
        _print_json(rows)
        return 0
    table = Table("at", "topic", "reason", "detail", "size")
    for r in rows:
        table.add_row(_iso(r["at"]), r["topic"], r["reason"], r["detail"][:60], r["size"])
    out.print(table if rows else "no dead letters")
    return 0


def cmd_audit(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    from protocol.crypto import b64

    log = relay.audit
    if args.audit_command == "verify":
        result = log.verify()
        if args.json:
            _print_json(result.__dict__)
        else:
            print(("ok: " if result.ok else "FAILED: ") + result.message)
        return 0 if result.ok else EXIT_UNAVAILABLE
    if args.audit_command == "proof":
        from relay.audit import LogDamaged

        try:
            _print_json(log.proof(args.entry))
        except IndexError as err:
            raise UsageError(str(err)) from None
        except (LogDamaged, ValueError, TypeError) as err:
            print(f"FAILED: the log is damaged, no proof can be given: {err}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        return 0
    if args.audit_command == "list":
        n = log.size()
        entries = log.entries(max(0, n - args.last), -1)
        if args.json:
            _print_json(entries)
            return 0
        table = Table("#", "at (UTC)", "kind", "actor", "data")
        for e in entries:
            table.add_row(
                str(e["index"]),
                _iso(e["at"]),
                e["kind"],
                e["actor"],
                json.dumps(e["data"], sort_keys=True)[:80],
            )
        out.print(table if entries else "the log is empty")
        return 0
    if args.audit_command == "key":
        print(b64(log.public))
        return 0
    raise AssertionError(args.audit_command)


def _credential_commands(sub: Any, role: str) -> None:
    for verb, what in (
        ("revoke", "end every API token of this {} at once (audited)"),
        ("rotate", "replace this {}'s API tokens with a new one, printed once (audited)"),
    ):
        sp = sub.add_parser(verb, help=what.format(role))
        sp.add_argument("name")


def cmd_registry(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    from protocol.crypto import CryptoFailure, read_public_key
    from relay.consent import NotFound

    engine = relay.engine
    role = "owner" if args.command == "owners" else "requester"
    verb = args.owners_command if args.command == "owners" else args.requesters_command
    try:
        if verb == "revoke":
            n = engine.revoke(role, args.name)
            print(f"revoked {n} token(s) of {role} {args.name}")
            return 0
        if verb == "rotate":
            token = engine.rotate(role, args.name)
            print(token)
            print(f"(the new API token of {args.name}: shown once)", file=sys.stderr)
            return 0
    except NotFound:
        raise UsageError(f"no {role} {args.name!r}") from None
    try:
        if args.command == "owners":
            folder = args.keys
            sign = read_public_key(folder / "sign.pub")
            box = read_public_key(folder / "box.pub")
            token = engine.add_owner(args.name, sign, box)
        else:
            token = engine.add_requester(
                args.name, args.kind, read_public_key(args.pubkey), args.org
            )
    except (CryptoFailure, ValueError) as err:
        raise UsageError(str(err)) from None
    print(token)
    print(f"(the API token of {args.name}: shown once, keep it secret)", file=sys.stderr)
    return 0


def cmd_policy(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    engine = relay.engine
    if args.policy_command == "set":
        changes = {
            k: v
            for k, v in (
                ("max_radius_m", args.max_radius_m),
                ("max_window_s", args.max_window_h and args.max_window_h * 3600),
                ("max_per_day", args.max_per_day),
                ("min_radius_m", args.min_radius_m),
                ("retention_s", args.retention_days and args.retention_days * 86400),
                (
                    "bystander_max_window_s",
                    args.bystander_max_window_h and args.bystander_max_window_h * 3600,
                ),
            )
            if v
        }
        if not changes:
            raise UsageError(
                "nothing to change: give --max-radius-m, --min-radius-m, --max-window-h, "
                "--max-per-day, --retention-days or --bystander-max-window-h"
            )
        engine.set_policy("operator", **changes)
    _print_json(engine.policy())
    return 0


def cmd_report(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    from relay.report import build_report, to_markdown

    if args.start >= args.end:
        raise UsageError("--from must be before --to")
    engine = relay.engine
    engine.expire_due()
    report = build_report(engine.audit.entries(), args.start, args.end, engine.policy())
    if args.json:
        _print_json(report)
    else:
        print(to_markdown(report), end="")
    return 0


def cmd_legal_demand(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    from relay.consent import NotFound

    try:
        if args.org:
            demand = relay.engine.file_legal_demand(args.docket, args.authority, args.org)
        else:
            demand = relay.engine.record_legal_demand(
                args.request, args.docket, args.authority, "operator"
            )
    except ValueError as err:
        raise UsageError(str(err)) from None
    except NotFound:
        raise UsageError(f"no request {args.request!r}") from None
    _print_json(demand)
    return 0


def cmd_serve(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    from relay.supervisor import serve

    config_path = str(args.config) if args.config else None
    _ = relay.engine  # fail early, with one line, if Redis or the audit key is not there
    serve(relay, config_path, args.workers, args.seconds, on_ready=out.print)
    return 0


def cmd_status(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    from relay.health import probe

    cfg = relay.cfg
    status = probe(relay)
    ok_broker, broker_detail = status["broker"]["ok"], status["broker"]["detail"]
    if args.json:
        _print_json(status)
    else:
        mark = {True: "[green]ok[/]", False: "[red]DOWN[/]"}
        out.print(f"broker   {mark[ok_broker]}  {status['broker']['address']} ({broker_detail})")
        out.print(f"redis    {mark[status['redis']['ok']]}  {cfg.redis.url}")
        if "counts" in status:
            c = status["counts"]
            out.print(
                f"devices  {c['devices']}   clips indexed {c['clips']}   "
                f"dead letters {c['dead_letters']}"
            )
            for name, w in sorted(status["workers"].items()):
                state = "[green]alive[/]" if w["alive"] else "[red]silent[/]"
                out.print(
                    f"worker   {name} {state}  indexed {w.get('indexed', 0)}  "
                    f"dead letters {w.get('dead_letters', 0)}  last beat {_iso(w['at'])}"
                )
            if not status["workers"]:
                out.print("workers  [yellow]none[/] (start: relay ingest)")
    return 0 if status["healthy"] else EXIT_UNAVAILABLE


def _check_names_free(relay: Relay, names: list[str]) -> None:
    """Two workers of one name would take each other's broker session, forever."""
    for name in names:
        other = relay.index.worker_in_use(name)
        if other is not None:
            raise UsageError(
                f"a worker named {name!r} is already running ({other}); give another --name"
            )


def cmd_ingest(relay: Relay, args: argparse.Namespace, out: Console) -> int:
    from relay.supervisor import spawn_workers, wait_workers, worker_main

    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    _ = relay.index  # fail early, with one line, if Redis is not there
    # Stable by default: a restarted worker finds its session (a pid would orphan one).
    base = getattr(args, "name", None) or os.uname().nodename
    config_path = str(args.config) if args.config else None
    if args.workers == 1:
        _check_names_free(relay, [base])
        out.print(f"ingest worker {base} running (Ctrl-C stops it)", highlight=False)
        worker_main(config_path, base, args.seconds, args.retire)
        return 0
    names = [f"{base}-{i}" for i in range(args.workers)]
    _check_names_free(relay, names)
    procs = spawn_workers(config_path, names, args.seconds, args.retire)
    out.print(f"{len(procs)} ingest workers running (Ctrl-C stops them)")
    wait_workers(procs)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    out = Console(highlight=False)
    try:
        try:
            cfg = load_relay_config(args.config)
        except RelayConfigError as err:
            raise UsageError(f"invalid config: {err}") from None
        commands = {
            "ingest": cmd_ingest, "serve": cmd_serve, "owners": cmd_registry,
            "requesters": cmd_registry, "policy": cmd_policy, "report": cmd_report,
            "legal-demand": cmd_legal_demand, "devices": cmd_devices, "clips": cmd_clips,
            "deadletters": cmd_deadletters, "status": cmd_status, "audit": cmd_audit,
        }  # fmt: skip
        return commands[args.command](Relay(cfg), args, out)
    except UsageError as err:
        print(f"relay: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if not disk_full(err):
            raise
        print(no_space_message("relay", err), file=sys.stderr)
        return EXIT_NO_SPACE
    except Unavailable as err:
        print(f"relay: error: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except redis.RedisError as err:
        print(f"relay: error: Redis failed: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
