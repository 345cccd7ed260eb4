"""``footage``: the owners' and requesters' client.

    footage keys new --out DIR          an Ed25519 signing key and an X25519 key (0600)
    footage verify-proof FILE [--relay-key KEY]
                                        check an audit-log inclusion proof offline

Bad arguments print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from protocol.crypto import CryptoFailure, OwnerKeys, read_public_key
from protocol.transparency import check_proof

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="footage", description="Keys and checks for doorbell owners and requesters.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    keys = sub.add_parser("keys", help="make keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    new = ksub.add_parser("new", help="make a signing key and a receiving key")
    new.add_argument("--out", type=Path, required=True, help="a new folder for the keys")
    vp = sub.add_parser("verify-proof", help="check an audit-log inclusion proof offline")
    vp.add_argument("proof", type=Path, help="a proof from: relay audit proof N")
    vp.add_argument("--relay-key", type=Path, help="the relay's public key, to pin it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "keys":
            if args.out.exists() and any(args.out.iterdir()):
                raise CryptoFailure(f"{args.out} is not empty: keys are never overwritten")
            keys = OwnerKeys.generate()
            keys.save(args.out)
            print(
                f"keys written to {args.out}: sign.key and box.key are secret (0600); "
                "give sign.pub and box.pub to whoever provisions your doorbell"
            )
            return 0
        if args.command == "verify-proof":
            try:
                proof = json.loads(args.proof.read_text())
            except (OSError, ValueError) as err:
                raise CryptoFailure(f"cannot read proof {args.proof}: {err}") from None
            pinned = read_public_key(args.relay_key) if args.relay_key else None
            try:
                ok, message = check_proof(proof, pinned)
            except (KeyError, TypeError, ValueError):
                ok, message = False, "the file is not an inclusion proof"
            print(("ok: " if ok else "FAILED: ") + message)
            return 0 if ok else 1
    except CryptoFailure as err:
        print(f"footage: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
