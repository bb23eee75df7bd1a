#!/usr/bin/env python3
"""What an operator would write instead of vipd: for each account, read its
membership (QQ Connect get_vip_rich_info), and when it ends within the
renewal window, sign and send one recharge. No ledger, no retries, no
callbacks, no verification: the baseline vipd is compared with
(`cargo bench --bench sidebyside`).

    python3 bench/handwritten.py accounts.json [--threads 32]

accounts.json: {"upstream": URL, "oauth_consumer_key": ..., "appid": ...,
"secret": ..., "path": "/api/164/310", "renew_before_secs": 259200,
"accounts": [{"name", "openid", "access_token", "qq_number"}, ...]}

Prints one JSON line: {"renewed", "failed", "skipped", "wall_secs"}.
Standard library only; one keep-alive connection per thread.
"""

import argparse
import hashlib
import http.client
import json
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def sign(params, secret):
    """md5 of key+value for every non-empty parameter but `sign`, sorted by
    key, then the secret; lowercase hex (the vendor's md5 mode)."""
    text = "".join(k + v for k, v in sorted(params.items()) if k != "sign" and v != "")
    return hashlib.md5((text + secret).encode("utf-8")).hexdigest()


class Client:
    """One keep-alive connection to the upstream."""

    def __init__(self, upstream):
        url = urllib.parse.urlsplit(upstream)
        self.host, self.port = url.hostname, url.port or 80
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                reply = self.conn.getresponse()
                return reply.status, reply.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")


def renew(client, cfg, account):
    """'renewed', 'skipped' (not due) or 'failed'."""
    query = urllib.parse.urlencode(
        {
            "access_token": account["access_token"],
            "oauth_consumer_key": cfg["oauth_consumer_key"],
            "openid": account["openid"],
            "format": "json",
        }
    )
    status, body = client.request("GET", "/user/get_vip_rich_info?" + query)
    if status != 200:
        return "failed"
    info = json.loads(body)
    if int(info.get("ret", -1)) != 0:
        return "failed"
    end = int(info.get("qq_vip_end") or 0)
    if end - time.time() > cfg["renew_before_secs"]:
        return "skipped"
    params = {
        "appid": str(cfg["appid"]),
        "qq_number": account["qq_number"],
        "format": "json",
        "time": str(int(time.time())),
    }
    params["sign"] = sign(params, cfg["secret"])
    status, body = client.request(
        "POST",
        cfg["path"],
        body=urllib.parse.urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
    )
    if status != 200:
        return "failed"
    reply = json.loads(body)
    return "renewed" if int(reply.get("codeid", -1)) == 10000 else "failed"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("accounts")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    with open(args.accounts) as f:
        cfg = json.load(f)
    counts = {"renewed": 0, "failed": 0, "skipped": 0}
    lock = threading.Lock()
    local = threading.local()

    def one(account):
        if not hasattr(local, "client"):
            local.client = Client(cfg["upstream"])
        try:
            result = renew(local.client, cfg, account)
        except Exception as e:  # a script would log and go on
            print(f"{account['name']}: {e}", file=sys.stderr)
            result = "failed"
        with lock:
            counts[result] += 1

    started = time.monotonic()
    if args.threads <= 1:
        for account in cfg["accounts"]:
            one(account)
    else:
        with ThreadPoolExecutor(max_workers=args.threads) as pool:
            list(pool.map(one, cfg["accounts"]))
    counts["wall_secs"] = time.monotonic() - started
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
