"""``footage``: the owners' and requesters' client of a relay.

    footage keys new --out DIR                    Ed25519 + X25519 keys (private halves 0600)
    footage request --lat --lon --radius M --from T --to T --reason R --case C --basis B
                    [--demand DOCKET] [--keys DIR]   --keys: signed (formats §3.1.1)
    footage status REQUEST                        what has been released so far (and, for
                                                  a signed request, whether the public
                                                  record holds what you signed)
    footage fetch REQUEST --key DIR --out DIR     download, unwrap, decrypt, check sha256
    footage asks [--json]                         (owners) pending asks
    footage approve ASK --keys DIR [--clips ID ...] [--valid-hours H]
                                                  seals to the box key the requester
                                                  signed; its signing key is pinned
                                                  per name on first use
    footage deny ASK
    footage delete CLIP --device ID --keys DIR    (owners) destroy a clip on the doorbell
    footage view CLIP... --device ID --keys DIR --out DIR   (owners) your own clips, remotely
    footage masks add DEVICE --polygon "x,y x,y x,y ..." [--name N] [--reason R] --keys DIR
    footage masks remove DEVICE NAME --keys DIR   (owners) privacy masks, signed, whole set
    footage masks list DEVICE --keys DIR [--json] the set this client last sent (footage/masks.py)
    footage answer ASK copy|erase|decline|accept --keys DIR [--reason R]
                                                  (owners) answer a bystander's ask
    footage bystander request --lat --lon --radius M --from T --to T --kind K
                    --description D [--key DIR] [--polygon X,Y ...] --save FILE
                                                  (anyone filmed) solves the proof of work
    footage bystander status FILE                 the answers so far (FILE from --save)
    footage bystander fetch FILE --key DIR --out DIR   download and decrypt a copy
    footage verify-proof FILE [--relay-key KEY]   check an audit-log inclusion proof
    footage log head [--json]                     the relay's signed log head, checked
    footage log check-consistency A B             do two exported heads share one history?
    footage log verify                            every public entry: the signed root, and sense

The relay and your token come from --relay URL and --token FILE, or from
$FOOTAGE_RELAY and $FOOTAGE_TOKEN_FILE.  Bad arguments print one line and exit 2.

Every call to a relay also witnesses its public log (:mod:`footage.witness`): the
log key is pinned on first use (or with --log-key FILE), the last signed head is
kept, and a head that does not extend it (a fork, a rollback, a truncation) stops
the command with exit 3 and both heads on stderr.  ``verify-proof`` checks only
against a pinned key (--relay-key, or the one pinned for --relay), never the key
inside the proof.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import httpx
except ModuleNotFoundError as err:  # the client part is not installed here
    sys.exit(f"footage: {err.name} is missing: install the client with: pip install '.[footage]'")

from common.cli import EXIT_NO_SPACE, UsageParser, disk_full, no_space_message, parse_time
from footage.masks import (
    MaskBook,
    MaskError,
    build_update,
    choose_basis,
    describe,
    parse_polygon,
)
from footage.pins import ChangedKey, RequesterPins
from footage.witness import (
    Witness,
    WitnessError,
    advance,
    compare,
    default_state_dir,
    export_head,
    same_size,
)
from protocol import askset, reqsig
from protocol import bystander as bys
from protocol.crypto import (
    CryptoFailure,
    OwnerKeys,
    b64,
    decrypt_stream,
    read_public_key,
    unb64,
    unwrap_key,
)
from protocol.decisions import Approval, Deletion, decision_hash, mask_points, sign_decision
from protocol.merkle import CompactTree, leaf_hash
from protocol.messages import CLIP_ID_PATTERN
from protocol.topics import DEVICE_ID_PATTERN
from protocol.transparency import (
    Inconsistent,
    NoPinnedKey,
    check_meaning,
    check_proof,
    open_head,
)

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_LOG_ALARM = 3
"""The relay's public log contradicts what this client saw before, or is signed by
another key: the output names both heads."""


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
    p.add_argument(
        "--state",
        type=Path,
        default=default_state_dir(),
        help="where pinned log keys and last heads are kept ($FOOTAGE_STATE)",
    )
    p.add_argument(
        "--log-key", type=Path, help="pin the relay's log key from this file (provisioning)"
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
    rq.add_argument("--demand", help="with --basis legal-demand: the docket the relay has on file")
    rq.add_argument(
        "--keys",
        type=Path,
        help="your keys (footage keys new): the request is signed so owners seal to your box",
    )
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

    an = sub.add_parser("answer", help="(owners) answer a bystander's ask")
    an.add_argument("ask")
    an.add_argument("answer", choices=("copy", "erase", "decline", "accept"))
    an.add_argument("--keys", type=Path, help="your key folder (copy, erase and accept sign)")
    an.add_argument("--reason", choices=bys.DECLINE_REASONS, help="with decline")
    an.add_argument("--valid-hours", type=float, default=24.0)

    by = sub.add_parser("bystander", help="(anyone filmed) ask owners for a copy or erasure")
    bsub = by.add_subparsers(dest="bystander_command", required=True, parser_class=UsageParser)
    br = bsub.add_parser("request", help="file a request (solves the relay's proof of work)")
    br.add_argument("--lat", type=float, required=True)
    br.add_argument("--lon", type=float, required=True)
    br.add_argument("--radius", type=float, required=True, help="metres")
    br.add_argument("--from", dest="start", type=parse_time, required=True)
    br.add_argument("--to", dest="end", type=parse_time, required=True)
    br.add_argument("--kind", choices=bys.KINDS, required=True)
    br.add_argument("--description", required=True, help="how an owner can recognise you")
    br.add_argument("--key", type=Path, help="with --kind copy: your key folder (box.pub)")
    br.add_argument(
        "--polygon", nargs="+", metavar="X,Y", help="with stop_filming: frame fractions"
    )
    br.add_argument("--save", type=Path, required=True, help="where the id and secret go")
    bs = bsub.add_parser("status", help="the answers so far")
    bs.add_argument("saved", type=Path, help="the file from request --save")
    bf = bsub.add_parser("fetch", help="download and decrypt copies released to you")
    bf.add_argument("saved", type=Path, help="the file from request --save")
    bf.add_argument("--key", type=Path, required=True, help="your key folder")
    bf.add_argument("--out", type=Path, required=True, help="where the MP4s go")

    vw = sub.add_parser("view", help="(owners) watch your own doorbell's clips remotely")
    vw.add_argument("clips", nargs="+", metavar="CLIP")
    vw.add_argument("--device", required=True, help="your doorbell's id")
    vw.add_argument("--keys", type=Path, required=True, help="your key folder")
    vw.add_argument("--out", type=Path, required=True, help="where the MP4s go")
    vw.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the upload")

    de = sub.add_parser("delete", help="(owners) delete a clip on your doorbell, for good")
    de.add_argument("clip")
    de.add_argument("--device", required=True, help="your doorbell's id")
    de.add_argument("--keys", type=Path, required=True, help="your key folder")
    ms = sub.add_parser("masks", help="(owners) privacy masks your doorbell adds, signed")
    msub = ms.add_subparsers(dest="masks_command", required=True, parser_class=UsageParser)
    ma = msub.add_parser("add", help="black out one more polygon from the next frame on")
    ma.add_argument("device")
    ma.add_argument(
        "--polygon", required=True, help='"x,y x,y x,y ..." as fractions of the frame (3-64)'
    )
    ma.add_argument("--name", help="a name for it (default: mask-N)")
    ma.add_argument("--reason", help="a reference, e.g. bystander:REQUEST")
    ma.add_argument("--keys", type=Path, required=True, help="your key folder")
    mr = msub.add_parser("remove", help="stop blacking out a named mask")
    mr.add_argument("device")
    mr.add_argument("name")
    mr.add_argument("--keys", type=Path, required=True, help="your key folder")
    ml = msub.add_parser("list", help="the owner masks last sent to a doorbell")
    ml.add_argument("device")
    ml.add_argument("--keys", type=Path, required=True, help="your key folder")
    ml.add_argument("--json", action="store_true")
    vp = sub.add_parser("verify-proof", help="check an audit-log inclusion proof offline")
    vp.add_argument("proof", type=Path, help="a proof from: relay audit proof N")
    vp.add_argument("--relay-key", type=Path, help="the relay's public key, to pin it")
    lg = sub.add_parser("log", help="the relay's public log: heads and consistency")
    lsub = lg.add_subparsers(dest="log_command", required=True, parser_class=UsageParser)
    lh = lsub.add_parser("head", help="print the relay's current signed head (checked)")
    lh.add_argument("--json", action="store_true", help="the exported form (the default)")
    lsub.add_parser(
        "verify", help="fetch every public entry: do they make the signed head, and sense?"
    )
    lc = lsub.add_parser("check-consistency", help="compare two exported heads")
    lc.add_argument("a", type=Path, help="a head from: footage log head")
    lc.add_argument("b", type=Path)
    return p


class Client:
    def __init__(self, relay: str | None, token_file: Path | None, need_token: bool = True):
        if not relay:
            raise Failure("no relay: give --relay URL or set FOOTAGE_RELAY")
        self.relay = relay
        headers = {}
        if token_file is None and need_token:
            raise Failure("no token: give --token FILE or set FOOTAGE_TOKEN_FILE")
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as err:
                raise Failure(f"cannot read token {token_file}: {err.strerror}") from None
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=relay, timeout=60, headers=headers)

    def public(self, path: str) -> Any:
        """GET from the public log API; None for 404 (an empty log, a size it lacks)."""
        try:
            resp = self.http.get(path, headers={"Authorization": ""})
        except httpx.HTTPError as err:
            raise Failure(f"cannot reach the relay: {err}", EXIT_FAILED) from None
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise Failure(f"the relay's log said no ({resp.status_code})", EXIT_FAILED)
        try:
            return resp.json()
        except ValueError:
            raise Failure("the relay's log answered something that is not JSON", 1) from None

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


def _mask_basis(
    client: Client, book: MaskBook, device: str, keys: OwnerKeys
) -> tuple[Any, str | None]:
    """The set the next change builds on and its hash (``previous``): the newer of the
    kept set and the one the doorbell announced, signature checked (footage.masks)."""
    held = client.call("GET", f"/v1/devices/{device}/masks")
    current, previous, note = choose_basis(
        device, book.signed(device), held, keys.sign_public, local_sent=book.sent(device)
    )
    if note is not None:
        print(f"note: {note}", file=sys.stderr)
    return current, previous


def cmd_masks(connect: Callable[[], Client], args: argparse.Namespace) -> int:
    """Change the whole signed set: the set in force (the newer of the one kept in the
    client's state and the one the relay serves, see footage.masks.choose_basis), named
    as ``previous``.  Bad input is refused before the relay is contacted; ``list`` shows
    the kept set and never contacts it."""
    try:
        keys = OwnerKeys.load(args.keys)
    except CryptoFailure as err:
        raise Failure(str(err)) from None
    book = MaskBook(args.state)
    client = None
    try:
        current = book.current(args.device, keys.sign_public)
        previous: str | None = None
        # Bad input is refused before the relay is contacted.
        polygon = parse_polygon(args.polygon) if args.masks_command == "add" else None
        if polygon is not None:
            build_update(None, args.device, add=[("check", polygon)])  # the polygon's bounds
        if args.masks_command != "list":
            client = connect()
            current, previous = _mask_basis(client, book, args.device, keys)
        if args.masks_command == "list":
            view = describe(current, book.signed(args.device), args.device)
            if args.json:
                print(json.dumps(view, indent=2))
            elif not view["masks"]:
                print(f"no owner masks sent to {args.device}")
            else:
                print(f"{args.device}: set {view['hash']} issued {view['issued']}")
                for m in view["masks"]:  # type: ignore[attr-defined]
                    pts = " ".join(f"{x:g},{y:g}" for x, y in m["points"])
                    print(f"  {m['name']}: {pts}")
            return 0
        if args.masks_command == "add":
            names = {m.name for m in current.masks} if current else set()
            name = args.name or next(f"mask-{i}" for i in range(1, 100) if f"mask-{i}" not in names)
            update = build_update(
                current,
                args.device,
                add=[(name, polygon or [])],
                reason=args.reason,
                previous=previous,
            )
        else:
            update = build_update(current, args.device, remove=[args.name], previous=previous)
    except MaskError as err:
        raise Failure(str(err)) from None
    signed = sign_decision(update, keys.sign_private)
    digest = decision_hash(signed)
    # Kept before it is sent: once the relay holds it, it may deliver it whatever it
    # answers, so the next change must build on it (else a relay that answered "error"
    # would have the owner sign away the mask it delivered).  The doorbell only takes a
    # newer set, so keeping one that never arrives removes nothing.
    book.save(args.device, signed)
    assert client is not None
    out = client.call("POST", f"/v1/devices/{args.device}/masks", json={"decision": signed})
    if not isinstance(out, dict) or out.get("hash") != digest:
        got = out.get("hash") if isinstance(out, dict) else None
        raise Failure(
            f"the relay answered for another mask set ({got!r}, not {digest}); the doorbell "
            "announces the set it applies (masks_applied) on the public log",
            EXIT_FAILED,
        )
    book.save(args.device, signed, sent=True)
    print(f"{len(update.masks)} owner masks sent to the doorbell (set {digest})")
    return 0


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
        print(download(item, keys.box_private, args.out))
    return 0


def download(item: dict[str, Any], box_private: bytes, out_dir: Path) -> Path:
    """Fetch one released clip, check its sha256, decrypt it into ``out_dir``.

    The names come from the relay, and whoever serves them can seal any key to our
    public key: the clip id and device become file names only if they are ids (no
    path), and what decrypts is kept only if it is an MP4."""
    clip_id, device = str(item.get("clip_id")), str(item.get("device", "copy"))
    if not re.fullmatch(CLIP_ID_PATTERN, clip_id) or not re.fullmatch(DEVICE_ID_PATTERN, device):
        raise Failure(f"the relay named {clip_id!r} of {device!r}: not a clip id", EXIT_FAILED)
    try:
        key = unwrap_key(unb64(item["wrapped_key"]), box_private)
    except CryptoFailure:
        raise Failure(f"clip {item['clip_id']} was not released to this key", EXIT_FAILED) from None
    enc = out_dir / f".{item['clip_id']}.enc"
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
    out = out_dir / f"{device}-{clip_id}.mp4"
    part = out_dir / f".{device}-{clip_id}.part"
    try:
        with open(enc, "rb") as src, open(part, "wb") as dst:
            decrypt_stream(src, dst, key)
        with open(part, "rb") as f:
            head = f.read(8)
        # Every MP4 (ISO BMFF) the doorbell writes starts with its ftyp box.
        if head[4:8] != b"ftyp":
            raise Failure(
                f"clip {clip_id} decrypts to something that is not an MP4: not kept",
                EXIT_FAILED,
            )
        part.replace(out)
    except CryptoFailure as err:
        raise Failure(f"clip {clip_id}: {err}", EXIT_FAILED) from None
    finally:
        enc.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    return out


def cmd_view(client: Client, args: argparse.Namespace) -> int:
    """The owner's own viewing: the same signed release, to the owner's own key."""
    try:
        keys = OwnerKeys.load(args.keys)
    except CryptoFailure as err:
        raise Failure(str(err)) from None
    clips = client.call("GET", f"/v1/devices/{args.device}/clips")
    wanted = [c for c in clips if c["clip_id"] in args.clips]
    missing = set(args.clips) - {c["clip_id"] for c in wanted}
    if missing:
        raise Failure(f"no such clip on {args.device}: {', '.join(sorted(missing))}")
    view_id = "view-" + os.urandom(8).hex()
    ids = [c["clip_id"] for c in wanted]
    approval = Approval.create(
        view_id,
        args.device,
        ids,
        keys.box_public,
        time.time() + 3600,
        open_clip_keys({"clips": wanted}, ids, keys.box_private),
    )
    client.call("POST", "/v1/views", json={"approval": sign_decision(approval, keys.sign_private)})
    deadline = time.monotonic() + args.wait
    while True:
        released = client.call("GET", f"/v1/views/{view_id}")["released"]
        if len(released) == len(ids):
            break
        if time.monotonic() > deadline:
            raise Failure(f"the doorbell did not upload within {args.wait:g} s", EXIT_FAILED)
        time.sleep(0.5)  # polling the relay for the doorbell's upload, not deciding anything
    args.out.mkdir(parents=True, exist_ok=True)
    for item in released:
        print(download(item, keys.box_private, args.out))
    return 0


def _polygon(points: list[str] | None) -> list[list[float]] | None:
    if points is None:
        return None
    try:
        poly = [[float(v) for v in p.split(",")] for p in points]
    except ValueError:
        raise Failure("--polygon takes X,Y points such as 0.1,0.2") from None
    why = bys.polygon_problem(poly)
    if why is not None:
        raise Failure(f"--polygon is not a mask an owner could sign: {why}")
    return poly


def cmd_bystander(connect: Callable[[], Client], args: argparse.Namespace) -> int:
    """A bystander's request: no account, a proof of work; the status token is saved.

    ``connect`` is called only once the local input is known good, so a missing file or
    key is reported as such, not as an unreachable relay."""
    if args.bystander_command != "request":
        saved = _read_json(args.saved, "saved request")
        try:
            request_id, token = saved["id"], saved["status_token"]
        except (KeyError, TypeError):
            raise Failure(f"{args.saved} is not a file from: footage bystander request") from None
        keys = None
        if args.bystander_command == "fetch":
            try:
                keys = OwnerKeys.load(args.key)
            except CryptoFailure as err:
                raise Failure(str(err)) from None
        status = connect().call(
            "GET",
            f"/v1/bystander/requests/{request_id}",
            headers={"Authorization": f"Bearer {token}"},
        )
        if keys is None:
            print(json.dumps(status, indent=2))
            return 0
        items = [i for a in status["answers"] for i in a.get("released") or []]
        if not items:
            print("no copy has been released to you (yet)")
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        for item in items:
            print(download(item, keys.box_private, args.out))
        return 0
    body: dict[str, Any] = {
        "lat": args.lat,
        "lon": args.lon,
        "radius_m": args.radius,
        "start": args.start,
        "end": args.end,
        "kind": args.kind,
        "description": args.description,
    }
    if args.kind == "copy":
        if args.key is None:
            raise Failure("--kind copy needs --key DIR: the copy is sealed to your box.pub")
        body["box_public"] = b64(_key_file(args.key / "box.pub"))
    if args.polygon is not None or args.kind == "stop_filming":
        body["polygon"] = _polygon(args.polygon)
    if args.save.exists():
        raise Failure(f"{args.save} exists: the secret of another request may be in it")
    client = connect()
    ch = client.call("GET", "/v1/bystander/challenge")
    print(f"solving the relay's proof of work ({ch['difficulty']} bits)...", file=sys.stderr)

    def progress(tries: int) -> None:
        print(f"  {tries} tries", file=sys.stderr)

    body["challenge"] = ch["challenge"]
    body["nonce"] = bys.solve(ch["challenge"], ch["difficulty"], progress)
    result = client.call("POST", "/v1/bystander/requests", json=body)
    fd = os.open(args.save, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"relay": client.relay, **result}, f)
    print(result["id"])
    return 0


def requester_box(ask: dict[str, Any], pins: RequesterPins, relay: str) -> bytes:
    """The box key to seal clip keys to: the one inside the requester's signed request,
    after checking its signature, that it says what the ask says, and the signing key
    against the one pinned for this requester (first use pins it)."""
    signed = ask.get("signed_request")
    if signed is None:
        pinned = pins.pinned(relay, ask["requester"])
        if pinned is not None:
            # They signed before: a relay that drops the signature must not get the keys
            # sealed to whatever key it names.
            raise Failure(
                f"REFUSED: {ask['requester']!r} signs their requests (key "
                f"{reqsig.fingerprint(unb64(pinned))} pinned) but this ask carries no "
                "signed request; nothing was sealed",
                EXIT_FAILED,
            )
        # An old-style request: only the relay vouches for this key (see formats §3.1.1).
        print(
            f"footage: WARNING: {ask['requester']!r} did not sign this request; the clip "
            "keys go to the key the relay names for them",
            file=sys.stderr,
        )
        return unb64(ask["requester_key"])
    try:
        payload = reqsig.verify_request(signed)
    except CryptoFailure as err:
        raise Failure(f"refused: {err}; nothing was sealed", EXIT_FAILED) from None
    shown = {
        **ask,
        "lat": ask["center"][0],
        "lon": ask["center"][1],
        "demand": (ask.get("legal_demands") or [{}])[0].get("docket"),
    }
    wrong = reqsig.matches(payload, shown)
    if wrong:
        raise Failure(
            f"refused: the ask differs from what the requester signed in {', '.join(wrong)}; "
            "nothing was sealed",
            EXIT_FAILED,
        )
    sign_public = unb64(payload["sign_public"])
    try:
        seen = pins.check(relay, ask["requester"], sign_public)
    except ChangedKey as err:
        raise Failure(f"REFUSED: {err}", EXIT_FAILED) from None
    if seen == "new":
        print(
            f"footage: pinned {ask['requester']!r}'s signing key, fingerprint "
            f"{reqsig.fingerprint(sign_public)}: compare it with the requester out of band",
            file=sys.stderr,
        )
    return unb64(payload["box_public"])


def cmd_answer(client: Client, args: argparse.Namespace) -> int:
    """An owner's answer to a bystander's ask, signed where it releases or deletes."""
    ask = next((a for a in client.call("GET", "/v1/asks") if a["id"] == args.ask), None)
    if ask is None or not ask.get("bystander"):
        raise Failure(f"no bystander's ask {args.ask!r} for you")
    body: dict[str, Any] = {"answer": args.answer}
    if args.answer == "decline":
        if not args.reason:
            raise Failure(f"decline needs --reason, one of {', '.join(bys.DECLINE_REASONS)}")
        body["reason"] = args.reason
    else:
        if args.keys is None:
            raise Failure(f"{args.answer} needs --keys DIR: it is signed with your key")
        try:
            keys = OwnerKeys.load(args.keys)
        except CryptoFailure as err:
            raise Failure(str(err)) from None
        if args.answer == "accept":
            return _accept_mask(client, args, ask, keys)
        if args.answer == "copy":
            approval = Approval.create(
                ask["request_id"],
                ask["device"],
                ask["clip_ids"],
                unb64(ask["requester_key"]),
                time.time() + args.valid_hours * 3600,
                open_clip_keys(ask, ask["clip_ids"], keys.box_private),
            )
            body["approval"] = sign_decision(approval, keys.sign_private)
        else:
            body["deletions"] = {
                c: sign_decision(Deletion.create(ask["device"], c), keys.sign_private)
                for c in ask["clip_ids"]
            }
    result = client.call("POST", f"/v1/asks/{args.ask}/answer", json=body)
    print(f"{result['status']}")
    for other in result.get("released_before") or []:
        print(f"    a copy of these clips was released before for request {other}: follow up")
    return 0


def _accept_mask(
    client: Client, args: argparse.Namespace, ask: dict[str, Any], keys: OwnerKeys
) -> int:
    """Accept a "stop filming" ask: the kept signed set plus the proposed polygon, signed,
    kept (as ``footage masks`` keeps it: before it is sent) and sent with the answer in
    one call; the relay records the accept only with a set that holds the proposal."""
    device, polygon = ask["device"], ask["bystander"].get("polygon")
    if bys.polygon_problem(polygon) is not None:
        raise Failure(f"the relay sent an ask without a usable polygon: {polygon!r}", EXIT_FAILED)
    book = MaskBook(args.state)
    try:
        current, previous = _mask_basis(client, book, device, keys)
        proposed = mask_points(polygon)
        if current is not None and any(m.points == proposed for m in current.masks):
            # Sent before (an earlier try whose answer was lost): the same set, newer.
            update = build_update(
                current, device, reason=f"bystander:{ask['request_id']}", previous=previous
            )
        else:
            name = "bystander-" + re.sub(r"[^A-Za-z0-9._-]", "-", ask["id"])[-54:]
            update = build_update(
                current,
                device,
                add=[(name, [(x, y) for x, y in polygon])],
                reason=f"bystander:{ask['request_id']}",
                previous=previous,
            )
    except MaskError as err:
        raise Failure(str(err)) from None
    signed = sign_decision(update, keys.sign_private)
    digest = decision_hash(signed)
    book.save(device, signed)  # first: see cmd_masks
    result = client.call(
        "POST", f"/v1/asks/{args.ask}/answer", json={"answer": "accept", "masks": signed}
    )
    if not isinstance(result, dict) or result.get("hash") != digest:
        got = result.get("hash") if isinstance(result, dict) else None
        raise Failure(
            f"the relay answered for another mask set ({got!r}, not {digest}); the doorbell "
            "announces the set it applies (masks_applied) on the public log",
            EXIT_FAILED,
        )
    book.save(device, signed, sent=True)
    print(result["status"])
    print(f"    {len(update.masks)} owner masks sent to {device} (set {digest})")
    return 0


def open_clip_keys(ask: dict[str, Any], clips: list[str], box_private: bytes) -> dict[str, bytes]:
    """Open each clip's key, sealed to the owner by the doorbell, to re-seal it in the approval."""
    sealed = {c["clip_id"]: c.get("owner_key") for c in ask.get("clips", [])}
    out = {}
    for clip_id in clips:
        if not sealed.get(clip_id):
            raise Failure(f"the relay has no sealed key for clip {clip_id}", EXIT_FAILED)
        try:
            out[clip_id] = unwrap_key(unb64(sealed[clip_id]), box_private)
        except CryptoFailure:
            raise Failure(
                f"the key of clip {clip_id} is not sealed to your key", EXIT_FAILED
            ) from None
    return out


def _key_file(path: Path) -> bytes:
    try:
        return read_public_key(path)
    except CryptoFailure as err:
        raise Failure(str(err)) from None


def witness_for(client: Client, args: argparse.Namespace) -> tuple[Witness, bytes]:
    """Pin (from --log-key, or on first use) and check the relay's head: every call."""
    w = Witness(args.state, client.relay)
    if args.log_key is not None:
        w.pin_key(_key_file(args.log_key))
    w.observe(client.public)
    key = w.pinned()
    assert key is not None
    return w, key


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise Failure(f"cannot read {what} {path}: {err}") from None


def cmd_verify_proof(args: argparse.Namespace) -> int:
    proof = _read_json(args.proof, "proof")
    pinned = _key_file(args.relay_key) if args.relay_key else None
    client = None
    if args.relay:
        client = Client(args.relay, args.token, need_token=False)
        _w, key = witness_for(client, args)
        if pinned is not None and pinned != key:
            raise WitnessError("--relay-key is not the key pinned for this relay")
        pinned = key
    try:
        ok, message = check_proof(proof, pinned)
    except NoPinnedKey:
        raise Failure(
            "no pinned relay key: give --relay-key FILE or --relay URL (pinned on first use); "
            "the key inside a proof is never trusted"
        ) from None
    except (KeyError, TypeError, ValueError, AttributeError):
        ok, message = False, "the file is not an inclusion proof"
    if ok and client is not None and pinned is not None:
        # The proof's head was signed earlier than the relay's current one: it must be a
        # prefix of today's log, or the relay has rewritten what the proof shows.
        head = open_head(proof["head"], pinned)
        w = Witness(args.state, client.relay)
        current = w.last(pinned)
        if current is not None:
            advance(client.public, head, current)
    print(("ok: " if ok else "FAILED: ") + message)
    return 0 if ok else EXIT_FAILED


def _open_exported(path: Path, key: bytes) -> Any:
    exported = _read_json(path, "head")
    try:
        if exported.get("key") not in (None, b64(key)):
            raise WitnessError(f"{path} is a head signed by another key than the pinned one")
        return open_head(exported.get("signed", exported), key)
    except (AttributeError, ValueError) as err:
        raise WitnessError(f"{path}: {err}") from None


def kept_witnesses(state: Path) -> list[Witness]:
    """The witness of every relay this client has followed (offline: the URL is unknown)."""
    relays = state / "relays"
    if not relays.is_dir():
        return []
    return [Witness(state, d.name) for d in sorted(relays.iterdir()) if d.is_dir()]


def cmd_log_offline(args: argparse.Namespace) -> int:
    """check-consistency without a relay: two heads of one size are enough to prove a fork."""
    if args.log_command != "check-consistency":
        raise Failure("no relay: give --relay URL or set FOOTAGE_RELAY")
    if args.log_key is None:
        raise Failure("no pinned relay key: give --log-key FILE (or --relay URL)")
    key = _key_file(args.log_key)
    a, b = (_open_exported(p, key) for p in (args.a, args.b))
    if a.size != b.size:
        # A head this client kept of either size settles it; else the relay must prove it.
        kept = [h for w in kept_witnesses(args.state) for h in w.kept(key).values()]
        if not same_size(kept, a, b):
            raise Failure(
                "heads of different sizes need a kept head of one of their sizes or the "
                "relay's proof: give --relay"
            )
        # Both are heads this client checked against each other when it saw them.
    else:
        compare(lambda _path: None, a, b)
    print(f"ok: one history: {a.describe()} and {b.describe()}")
    return 0


def cmd_log(client: Client, args: argparse.Namespace) -> int:
    w, key = witness_for(client, args)
    if args.log_command == "head":
        head = w.last(key)
        if head is None:
            raise Failure("the relay's log is empty", EXIT_FAILED)
        print(json.dumps(export_head(client.relay, key, head), indent=2))
        return 0
    if args.log_command == "verify":
        return log_verify(client, w.last(key))
    a, b = (_open_exported(p, key) for p in (args.a, args.b))
    same_size(w.kept(key).values(), a, b)
    compare(client.public, a, b, key)
    print(f"ok: one history: {a.describe()} and {b.describe()}")
    return 0


def public_entries(client: Client, head: Any) -> tuple[CompactTree, list[dict[str, Any]]]:
    """Every public entry up to ``head`` (unreadable ones as ``{}``) and their tree."""
    tree, entries = CompactTree(), []
    while tree.size < head.size:
        page = client.public(f"/v1/log/entries?start={tree.size}&end={head.size - 1}")
        got = (page or {}).get("entries") or []
        if not got:
            raise Failure(f"the relay served {tree.size} of {head.size} entries", EXIT_FAILED)
        for item in got:
            raw = unb64(item["entry"])
            tree.append(leaf_hash(raw))
            try:
                entries.append(json.loads(raw))
            except ValueError:
                entries.append({})
    return tree, entries


def check_my_request(client: Client, w: Witness, key: bytes, request_id: str, mine: str) -> int:
    """Does the public ``request`` entry carry the hash of the request this client
    signed (``mine``)?  Exit 0 if so or not recorded yet, EXIT_LOG_ALARM if another."""
    head = w.last(key)
    tree, entries = public_entries(client, head) if head is not None else (None, [])
    if tree is not None and tree.root() != head.root:
        raise Failure("the relay's public entries do not make the head it signed", EXIT_LOG_ALARM)
    for e in entries:
        if not isinstance(e, dict):
            continue
        d = e.get("data")
        if e.get("kind") == "request" and isinstance(d, dict) and d.get("id") == request_id:
            if d.get("signed_request_hash") != mine:
                print(
                    f"footage: ALARM: the public record of {request_id} has signed request "
                    f"hash {d.get('signed_request_hash')!r}, not the {mine} you signed",
                    file=sys.stderr,
                )
                return EXIT_LOG_ALARM
            print(f"on the public record with your signed request ({mine})", file=sys.stderr)
            return 0
    print(f"{request_id} is not on the public record yet", file=sys.stderr)
    return 0


def log_verify(client: Client, head: Any) -> int:
    """Recompute the signed root from the public entries and check their meaning."""
    if head is None:
        print("ok: the log is empty")
        return 0
    tree, entries = public_entries(client, head)
    if tree.root() != head.root:
        print(f"FAILED: the {head.size} public entries do not make the root the relay signed")
        return EXIT_FAILED
    problems = check_meaning(entries)
    for index, why in problems:
        print(f"FAILED: entry #{index}: {why}")
    if problems:
        return EXIT_FAILED
    print(f"ok: {head.size} public entries make the signed head and make sense")
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
            return cmd_verify_proof(args)
        if args.command == "log":
            if not args.relay:
                return cmd_log_offline(args)
            return cmd_log(Client(args.relay, args.token, need_token=False), args)
        if args.command == "masks":

            def connect() -> Client:
                client = Client(args.relay, args.token)
                witness_for(client, args)
                return client

            return cmd_masks(connect, args)
        if args.command == "bystander":

            def connect_anon() -> Client:
                client = Client(args.relay, None, need_token=False)
                witness_for(client, args)
                return client

            return cmd_bystander(connect_anon, args)
        client = Client(args.relay, args.token)
        witness_for(client, args)
        if args.command == "answer":
            return cmd_answer(client, args)
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
            if args.demand:
                body["demand"] = args.demand
            if args.keys is not None:
                body["signed"] = reqsig.sign_request(body, OwnerKeys.load(args.keys))
                # Kept so `footage status` can compare the relay's record with it.
                print(f"signed request hash {reqsig.request_hash(body['signed'])}", file=sys.stderr)
            request_id = client.call("POST", "/v1/requests", json=body)["id"]
            if args.keys is not None:
                RequesterPins(args.state).keep_mine(
                    client.relay, request_id, reqsig.request_hash(body["signed"])
                )
            print(request_id)
            return 0
        if args.command == "status":
            print(json.dumps(client.call("GET", f"/v1/requests/{args.request}"), indent=2))
            mine = RequesterPins(args.state).mine(client.relay, args.request)
            if mine is None:
                return 0
            w, key = witness_for(client, args)
            return check_my_request(client, w, key, args.request, mine)
        if args.command == "fetch":
            return cmd_fetch(client, args)
        if args.command == "view":
            return cmd_view(client, args)
        if args.command == "asks":
            asks = client.call("GET", "/v1/asks")
            if args.json:
                print(json.dumps(asks, indent=2))
                return 0
            pending = [a for a in asks if a["status"] == "pending"]
            for a in pending:
                b = a.get("bystander")
                if b:
                    print(
                        f"{a['id']}  from a bystander, asking {b['kind']}, answer by "
                        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(a['expires']))}"
                        f"{' (REMINDER: the deadline is near)' if b.get('reminded_at') else ''}"
                        f": {b['description']!r}"
                    )
                    if b.get("polygon"):
                        print(f"    proposes masking {json.dumps(b['polygon'])}")
                    answers = "|".join(bys.ANSWERS[b["kind"]])
                    print(f"    answer with: footage answer {a['id']} {answers}")
                else:
                    print(
                        f"{a['id']}  from {a['requester']} ({a['requester_kind']}), case "
                        f"{a['case_ref']}, basis {a['basis']}: {a['reason']}"
                    )
                print(f"    doorbell {a['device']}, clips: {' '.join(a['clip_ids'])}")
                for d in a.get("legal_demands", []):
                    print(f"    legal demand {d['docket']} by {d['authority']}")
                proof = a.get("commitment") or {}
                mine = {"ask": a["id"], "request": a["request_id"], "device": a["device"]}
                if askset.check(proof, proof.get("root", ""), mine):
                    print(f"    on the public record under asks_root {proof['root']}")
                else:
                    print("    WARNING: this ask's proof does not check out")
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
                requester_box(ask, RequesterPins(args.state), client.relay),
                time.time() + args.valid_hours * 3600,
                open_clip_keys(ask, clips, keys.box_private),
            )
            signed = sign_decision(approval, keys.sign_private)
            result = client.call("POST", f"/v1/asks/{args.ask}/approve", json={"approval": signed})
            print(f"approved; sent to doorbell {result['forwarded_to']}")
            return 0
    except Inconsistent as err:
        print(f"footage: ALARM: the relay's public log {err.report()}", file=sys.stderr)
        return EXIT_LOG_ALARM
    except WitnessError as err:
        print(f"footage: ALARM: {err}", file=sys.stderr)
        return EXIT_LOG_ALARM
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
