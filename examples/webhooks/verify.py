#!/usr/bin/env python3
"""Checks a webhook vipd signed, as a receiver should (README "Signed webhooks").

    verify.py SECRET_FILE 'VIPD_SIGNATURE_HEADER' < BODY    exit 0: genuine, 1: not

VERIFY_NOW (unix seconds) stands in for the clock, for tests.
"""
import hashlib
import hmac
import os
import sys
import time

WINDOW = 300  # seconds a signature stays acceptable


def verify(secret, header, body, now=None):
    """True when `body` (bytes, exactly as received) was signed by vipd with
    `secret` (bytes) under `header` (the vipd-signature value) within WINDOW."""
    t, signatures = None, []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1":
            signatures.append(value)
    if t is None or not signatures:
        return False
    now = int(time.time()) if now is None else now
    if abs(now - t) > WINDOW:
        return False  # a replay, or a clock far off
    expected = hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in signatures)


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        secret = f.read().strip()
    now = int(os.environ["VERIFY_NOW"]) if "VERIFY_NOW" in os.environ else None
    sys.exit(0 if verify(secret, sys.argv[2], sys.stdin.buffer.read(), now) else 1)
