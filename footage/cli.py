"""``footage``: the owners' and requesters' client of a relay.

    footage keys new --out DIR                    Ed25519 + X25519 keys (private halves 0600)
    footage request --lat --lon --radius M --from T --to T --reason R --case C --basis B
    footage status REQUEST                        what has been released so far
    footage fetch REQUEST --key DIR --out DIR     download, unwrap, decrypt, check sha256
    footage asks [--json]                         (owners) pending asks
    footage approve ASK --keys DIR [--clips ID ...] [--valid-hours H]
    footage deny ASK
    footage delete CLIP --device ID --keys DIR    (owners) destroy a clip on the doorbell
    footage verify-proof FILE [--relay-key KEY]   check an audit-log inclusion proof offline

The relay and your token come from --relay URL and --token FILE, or from
$FOOTAGE_RELAY and $FOOTAGE_TOKEN_FILE.  Bad arguments print one line and exit 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

try:
    import httpx
except ModuleNotFoundError as err:  # the client part is not installed here
    sys.exit(f"footage: {err.name} is missing: install the client with: pip install '.[footage]'")

from common.cli import EXIT_NO_SPACE, UsageParser, disk_full, no_space_message, parse_time
from protocol.crypto import (
    CryptoFailure,
    OwnerKeys,
    decrypt_stream,
    read_public_key,
    unb64,
    unwrap_key,
)
from protocol.decisions import Approval, Deletion, sign_decision
from protocol.transparency import check_proof

EXIT_USAGE = 2
EXIT_FAILED = 1


class Failure(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="footage", description="Ask for, approve and fetch doorbell footage.")
    p.add_argument("--relay", default=os.environ.get("FOOTAGE_RELAY"), help="relay URL")
    p.add_argument(
        "--token",
        type=Path,
        default=os.environ.get("FOOTAGE_TOKEN_FILE"),
        help="a file holding your API token",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    keys = sub.add_parser("keys", help="make keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, parser_class=UsageParser)
    new = ksub.add_parser("new", help="make a signing key and a receiving key")
    new.add_argument("--out", type=Path, required=True, help="a new folder for the keys")

    rq = sub.add_parser("request", help="ask for footage of an area and a time window")
    rq.add_argument("--lat", type=float, required=True)
    rq.add_argument("--lon", type=float, required=True)
    rq.add_argument("--radius", type=float, required=True, help="metres")
    rq.add_argument("--from", dest="start", type=parse_time, required=True)
    rq.add_argument("--to", dest="end", type=parse_time, required=True)
    rq.add_argument("--reason", required=True)
    rq.add_argument("--case", required=True, help="your case reference")
    rq.add_argument("--basis", choices=("consent", "legal-demand"), default="consent")
    st = sub.add_parser("status", help="a request's status and what was released")
    st.add_argument("request")
    fe = sub.add_parser("fetch", help="download and decrypt what was released to you")
    fe.add_argument("request")
    fe.add_argument("--key", type=Path, required=True, help="your key folder")
    fe.add_argument("--out", type=Path, required=True, help="where the MP4s go")

    asks = sub.add_parser("asks", help="(owners) asks waiting for your decision")
    asks.add_argument("--json", action="store_true")
    ap = sub.add_parser("approve", help="(owners) sign and send a release")
    ap.add_argument("ask")
    ap.add_argument("--keys", type=Path, required=True, help="your key folder")
    ap.add_argument("--clips", nargs="+", help="only these clips (default: all in the ask)")
    ap.add_argument("--valid-hours", type=float, default=24.0)
    dn = sub.add_parser("deny", help="(owners) say no")
    dn.add_argument("ask")

    de = sub.add_parser("delete", help="(owners) delete a clip on your doorbell, for good")
    de.add_argument("clip")
    de.add_argument("--device", required=True, help="your doorbell's id")
    de.add_argument("--keys", type=Path, required=True, help="your key folder")
    vp = sub.add_parser("verify-proof", help="check an audit-log inclusion proof offline")
    vp.add_argument("proof", type=Path, help="a proof from: relay audit proof N")
    vp.add_argument("--relay-key", type=Path, help="the relay's public key, to pin it")
    return p


class Client:
    def __init__(self, relay: str | None, token_file: Path | None) -> None:
        if not relay:
            raise Failure("no relay: give --relay URL or set FOOTAGE_RELAY")
        if token_file is None:
            raise Failure("no token: give --token FILE or set FOOTAGE_TOKEN_FILE")
        try:
            token = token_file.read_text().strip()
        except OSError as err:
            raise Failure(f"cannot read token {token_file}: {err.strerror}") from None
        self.http = httpx.Client(
            base_url=relay, timeout=60, headers={"Authorization": f"Bearer {token}"}
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as err:
            raise Failure(f"cannot reach the relay: {err}", EXIT_FAILED) from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
                why = body.get("reason") or body.get("detail")
            except ValueError:
                why = resp.text[:200]
            raise Failure(f"the relay said no ({resp.status_code}): {why}", EXIT_FAILED)
        return resp.json()


def cmd_fetch(client: Client, args: argparse.Namespace) -> int:
    try:
        keys = OwnerKeys.load(args.key)
    except CryptoFailure as err:
        raise Failure(str(err)) from None
    status = client.call("GET", f"/v1/requests/{args.request}")
    if not status["released"]:
        print("nothing has been released for this request (yet)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for item in status["released"]:
        try:
            key = unwrap_key(unb64(item["wrapped_key"]), keys.box_private)
        except CryptoFailure:
            raise Failure(
                f"clip {item['clip_id']} was not released to this key", EXIT_FAILED
            ) from None
        enc = args.out / f".{item['clip_id']}.enc"
        # A plain client: the blob may live on S3, which must never see our relay token.
        with httpx.Client(timeout=120) as plain, plain.stream("GET", item["download_url"]) as resp:
            if resp.status_code >= 400:
                raise Failure(
                    f"download of {item['clip_id']} refused ({resp.status_code})", EXIT_FAILED
                )
            digest = hashlib.sha256()
            with open(enc, "wb") as f:
                for chunk in resp.iter_bytes():
                    digest.update(chunk)
                    f.write(chunk)
        if digest.hexdigest() != item["sha256"]:
            enc.unlink()
            raise Failure(
                f"clip {item['clip_id']} does not match its sha256: not what the doorbell sent",
                EXIT_FAILED,
            )
        out = args.out / f"{item['device']}-{item['clip_id']}.mp4"
        with open(enc, "rb") as src, open(out, "wb") as dst:
            decrypt_stream(src, dst, key)
        enc.unlink()
        print(f"{out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "keys":
            if args.out.exists() and any(args.out.iterdir()):
                raise Failure(f"{args.out} is not empty: keys are never overwritten")
            OwnerKeys.generate().save(args.out)
            print(
                f"keys written to {args.out}: sign.key and box.key are secret (0600); "
                "share sign.pub and box.pub"
            )
            return 0
        if args.command == "verify-proof":
            try:
                proof = json.loads(args.proof.read_text())
            except (OSError, ValueError) as err:
                raise Failure(f"cannot read proof {args.proof}: {err}") from None
            pinned = read_public_key(args.relay_key) if args.relay_key else None
            try:
                ok, message = check_proof(proof, pinned)
            except (KeyError, TypeError, ValueError):
                ok, message = False, "the file is not an inclusion proof"
            print(("ok: " if ok else "FAILED: ") + message)
            return 0 if ok else EXIT_FAILED
        client = Client(args.relay, args.token)
        if args.command == "request":
            body = {
                "lat": args.lat,
                "lon": args.lon,
                "radius_m": args.radius,
                "start": args.start,
                "end": args.end,
                "reason": args.reason,
                "case_ref": args.case,
                "basis": args.basis,
            }
            print(client.call("POST", "/v1/requests", json=body)["id"])
            return 0
        if args.command == "status":
            print(json.dumps(client.call("GET", f"/v1/requests/{args.request}"), indent=2))
            return 0
        if args.command == "fetch":
            return cmd_fetch(client, args)
        if args.command == "asks":
            asks = client.call("GET", "/v1/asks")
            if args.json:
                print(json.dumps(asks, indent=2))
                return 0
            pending = [a for a in asks if a["status"] == "pending"]
            for a in pending:
                print(
                    f"{a['id']}  from {a['requester']} ({a['requester_kind']}), case "
                    f"{a['case_ref']}, basis {a['basis']}: {a['reason']}"
                )
                print(f"    doorbell {a['device']}, clips: {' '.join(a['clip_ids'])}")
                for d in a.get("legal_demands", []):
                    print(f"    legal demand {d['docket']} by {d['authority']}")
            if not pending:
                print("no pending asks")
            return 0
        if args.command == "delete":
            try:
                keys = OwnerKeys.load(args.keys)
            except CryptoFailure as err:
                raise Failure(str(err)) from None
            signed = sign_decision(Deletion.create(args.device, args.clip), keys.sign_private)
            path = f"/v1/clips/{args.device}/{args.clip}/delete"
            print(client.call("POST", path, json={"signature": signed})["status"])
            return 0
        if args.command == "deny":
            print(client.call("POST", f"/v1/asks/{args.ask}/deny")["status"])
            return 0
        if args.command == "approve":
            try:
                keys = OwnerKeys.load(args.keys)
            except CryptoFailure as err:
                raise Failure(str(err)) from None
            ask = next((a for a in client.call("GET", "/v1/asks") if a["id"] == args.ask), None)
            if ask is None:
                raise Failure(f"no ask {args.ask!r} for you")
            clips = args.clips or ask["clip_ids"]
            unknown = set(clips) - set(ask["clip_ids"])
            if unknown:
                raise Failure(f"not in the ask: {', '.join(sorted(unknown))}")
            approval = Approval.create(
                ask["request_id"],
                ask["device"],
                clips,
                unb64(ask["requester_key"]),
                time.time() + args.valid_hours * 3600,
            )
            signed = sign_decision(approval, keys.sign_private)
            result = client.call("POST", f"/v1/asks/{args.ask}/approve", json={"approval": signed})
            print(f"approved; sent to doorbell {result['forwarded_to']}")
            return 0
    except Failure as err:
        print(f"footage: error: {err}", file=sys.stderr)
        return err.code
    except CryptoFailure as err:
        print(f"footage: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if not disk_full(err):
            raise
        print(no_space_message("footage", err), file=sys.stderr)
        return EXIT_NO_SPACE
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
