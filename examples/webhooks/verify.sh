#!/bin/sh
# Checks a webhook vipd signed, with openssl (README "Signed webhooks").
#   verify.sh SECRET_FILE 'VIPD_SIGNATURE_HEADER' BODY_FILE    exit 0: genuine, 1: not
# VERIFY_NOW (unix seconds) stands in for the clock, for tests.
secret=$(cat "$1") header=$2 body=$3
t=$(printf '%s\n' "$header" | tr ',' '\n' | sed -n 's/^ *t=\([0-9]*\)$/\1/p' | head -n 1)
[ -n "$t" ] || exit 1
age=$(( ${VERIFY_NOW:-$(date +%s)} - t ))
[ "${age#-}" -le 300 ] || exit 1    # a replay, or a clock far off
expected=$({ printf '%s.' "$t"; cat "$body"; } | openssl dgst -sha256 -hmac "$secret" | sed 's/^.*= //')
printf '%s\n' "$header" | tr ',' '\n' | sed -n 's/^ *v1=//p' | grep -qx "$expected"
