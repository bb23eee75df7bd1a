#!/usr/bin/env bash
# Builds the .deb (the debug build: a layout check, not a release) and
# checks, unpacked into a temporary root, that every file is where the
# unit and the README expect it: run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
# The debug binary `cargo test` just built, when there is one (a fresh
# `cargo build` without the dev-dependencies' features rebuilds the tree).
if [ -x target/debug/vipd ]; then export NO_BUILD=1; fi
deb=$(PROFILE=dev packaging/build-deb.sh)
[ -f "$deb" ] || { echo "no .deb built ($deb)" >&2; exit 1; }
root=$(mktemp -d)
ctl=$(mktemp -d)
trap 'rm -rf "$root" "$ctl"' EXIT
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$ctl"
fail() { echo "$deb: $*" >&2; exit 1; }
for f in usr/bin/vipd lib/systemd/system/vipd.service etc/vipd/rules.yaml \
    usr/share/man/man1/vipd.1.gz usr/share/bash-completion/completions/vipd \
    usr/share/zsh/vendor-completions/_vipd usr/share/fish/vendor_completions.d/vipd.fish \
    usr/share/vipd/prometheus/vipd-alerts.yaml usr/share/vipd/grafana/vipd-dashboard.json; do
    [ -e "$root/$f" ] || fail "missing /$f"
done
[ -x "$root/usr/bin/vipd" ] || fail "/usr/bin/vipd is not executable"
# Every file the unit names is in the package, except the credentials
# folder, which the postinst makes (root's alone).
unit="$root/lib/systemd/system/vipd.service"
for path in $(grep -v '^#' "$unit" | grep -o '/usr/bin/vipd\|/etc/vipd/[a-z.]*' | sort -u); do
    case "$path" in
        /etc/vipd/credentials) grep -q "install -d -m 0700 /etc/vipd/credentials" "$ctl/postinst" \
            || fail "the postinst does not make /etc/vipd/credentials" ;;
        *) [ -e "$root$path" ] || fail "the unit names $path, which the package does not hold" ;;
    esac
done
grep -qx /etc/vipd/rules.yaml "$ctl/conffiles" || fail "/etc/vipd/rules.yaml is not a conffile"
[ "$(stat -c %a "$root/etc/vipd/rules.yaml")" = 644 ] || fail "rules.yaml is not 0644"
# The packaged binary checks the packaged configuration (credentials are
# not there yet: warnings, exit 0).
"$root/usr/bin/vipd" check --config "$root/etc/vipd/rules.yaml" >/dev/null 2>&1 \
    || fail "vipd check fails on the packaged /etc/vipd/rules.yaml"
zcat "$root/usr/share/man/man1/vipd.1.gz" | grep -q '^\.TH vipd' || fail "the man page has no .TH"
echo "$(basename "$deb"): files where the unit expects them"
