#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/seeds/<target>/seed-*.

Each seed is an input in its target's format (see src/fuzz.rs): real
shapes from the vendor documents, the sandbox and the shipped files, and
edges (empty, truncated, wrong types). Run from the repository root:
`python3 fuzz/make-seeds.py`.
"""
import glob, hashlib, json, os, shutil, struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")
SECRET = "0123456789abcdef0123456789abcdef"


def sign(fields):
    items = sorted((k, v) for k, v in fields.items() if k != "sign" and v != "")
    return hashlib.md5(("".join(k + v for k, v in items) + SECRET).encode()).hexdigest()


def write(target, seeds):
    d = os.path.join(OUT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for i, data in enumerate(seeds):
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, "seed-%03d" % i), "wb") as f:
            f.write(data)


def callback():
    from urllib.parse import urlencode
    seeds = []
    base = {"orderid": "4B629017745K00002946", "status": "success",
            "time": "1800000000", "qq_number": "5666857", "price": "12.11"}
    for status in ["success", "failed", "refund", ""]:
        f = dict(base, status=status)
        f["sign"] = sign(f)
        seeds.append(b"\x00" + urlencode(f).encode() + b"\x00")
        seeds.append(b"\x00\x00" + urlencode(f).encode())
        seeds.append(b"\x01\x00" + json.dumps(f).encode())
    f = dict(base, time=str(-2**63))
    f["sign"] = sign(f)
    seeds.append(b"\x00" + urlencode(f).encode() + b"\x00")
    seeds += [b"", b"\x00", b"\x01\x00{}", b"\x01\x00[1]", b"\x01\x00{\"a\":{\"b\":[1,null]}}",
              b"\x00a=%ZZ&b=%e4%b8%ad&sign=X\x00c=1&c=2"]
    write("callback", seeds)


def recharge_reply():
    bodies = [
        {"codeid": 10000, "curtime": "1629017745", "message": "操作成功!",
         "orderid": "4B629017745K00002946", "price": "12.11", "retdata": []},
        {"codeid": "10023", "message": "pending", "orderid": "X1", "price": 12.11},
        {"codeid": 10004, "curtime": 1629017745, "message": "clock"},
        {"codeid": 10024, "message": "debug", "retdata": {"a": 1}},
        {"codeid": 10018}, {"codeid": 1e3}, {"codeid": None}, {"message": "no code"},
        {"codeid": 10000, "price": 1e300}, {"codeid": 10000, "price": "-0.01"},
    ]
    seeds = [struct.pack(">H", 200) + json.dumps(b, ensure_ascii=False).encode() for b in bodies]
    seeds += [struct.pack(">H", 502) + b"<html>Bad Gateway</html>",
              struct.pack(">H", 200) + b"<html>busy</html>",
              struct.pack(">H", 200) + b'{"codeid":100',
              struct.pack(">H", 404) + b"[]", b"", b"\x00"]
    write("recharge_reply", seeds)


def vip_info():
    good = {"ret": 0, "msg": "", "is_lost": 0, "is_qq_vip": 1, "is_qq_year_vip": 0,
            "qq_vip_level": 5, "qq_vip_start": 1313974842, "qq_vip_end": 1359507642,
            "qq_vip_payway": 111, "qq_year_vip_start": 1326771509,
            "qq_year_vip_end": 1358912309, "history_pay_time": 0}
    xml = ('<?xml version="1.0" encoding="UTF-8"?><data>' +
           "".join("<%s>%s</%s>" % (k, v, k) for k, v in good.items()) + "</data>")
    seeds = [json.dumps(good), json.dumps(dict(good, qq_vip_end="1359507642")), xml,
             '{"ret":100014,"msg":"token expired"}', "<data><ret>1002</ret><msg>x</msg></data>",
             '{"access_token":"T","expires_in":7776000,"refresh_token":"R"}',
             "access_token=T&expires_in=7776000&refresh_token=R",
             'callback( {"error":100014,"error_description":"x"} );',
             "<html><body>busy</body></html>", "", "  \n<data>", '{"ret":"0","qq_vip_end":1e30}']
    write("vip_info", seeds)


def config():
    seeds = []
    for path in ["rules.yaml"] + sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml"))):
        with open(os.path.join(ROOT, path), "rb") as f:
            seeds.append(f.read())
    seeds += ["daemon: " + "[" * 40 + "]" * 40, "accounts: [{name: a}]\n", "&a [*a]", "---\n...\n",
              "providers: {x: {kind: recharge, secret: '${file:/dev/zero}'}}", ""]
    write("config", seeds)


def pattern():
    cases = [(0, "key=value", "^(%w+)=(%w*)$"), (1, "  trim me  ", "^%s*(.-)%s*$"),
             (2, "a,b,,c", "([^,]*)"), (3, "hello world", "%s+"), (0, "a" * 300, "a*b"),
             (1, "x" * 40, "a?" * 10 + "a" * 10), (2, "(a(b)c)", "%b()"),
             (3, "THE (quick) fox", "%f[%a]%a+"), (0, "abcabc", "(a)(b)%1"),
             (1, "[]]", "[]]+"), (0, "", ""), (1, "%", "%")]
    write("pattern", [bytes([op]) + s.encode() + b"\x00" + p.encode() for op, s, p in cases])


def lua():
    seeds = []
    for path in ["scripts/activity.lua"] + sorted(glob.glob(os.path.join(ROOT, "examples", "plugins", "*.lua"))):
        with open(os.path.join(ROOT, path), "rb") as f:
            seeds.append(f.read())
    seeds += [
        'vipd.on("error", function(ev) return ("x"):rep(1000):find(".-.-b") end)',
        'vipd.on("error", function(ev) while true do end end)',
        'vipd.on("error", function(ev) local t = {} for i = 1, 1e9 do t[i] = i end end)',
        'vipd.on("error", function(ev) for i = 1, 100 do vipd.kv.set("k" .. i, ("v"):rep(60000)) end end)',
        'setmetatable({}, {__gc = function() while true do end end})',
        'vipd.on("recharge_result", function(ev) local co = coroutine.wrap(function() while true do pcall(error) end end) co() end)',
        'vipd.on("before_recharge", function(ev) return { veto = true, reason = ev.account } end)',
        'vipd.on("parse_callback", function(ev) return { order = ev.fields.orderid, success = true } end)',
        'local s = string; s.format = nil; vipd.on("error", function() return load("return 1")() end)',
        'vipd.every("1s", function() vipd.log.info(vipd.json.encode(vipd.config)) end)',
        "return", "", "\x1bLua",
    ]
    write("lua", seeds)


for f in [callback, recharge_reply, vip_info, config, pattern, lua]:
    f()
print("seeds written to", OUT)
