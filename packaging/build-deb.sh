#!/usr/bin/env bash
# Builds the .deb: the binary, the unit, the man page, shell completions,
# the example configuration as /etc/vipd/rules.yaml (a conffile), and the
# alert rules and dashboard. Needs cargo-deb (`cargo install cargo-deb`).
#
#   packaging/build-deb.sh            # release build (fat LTO, a few minutes)
#   PROFILE=dev packaging/build-deb.sh  # the debug build, for a layout check
#   NO_BUILD=1 ...                      # package the binary already built
#
# Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
if [ "$profile" = release ]; then dir=release; else dir=debug; fi
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --profile "$profile" --bin vipd
fi
bin=target/$dir/vipd
assets=target/deb-assets
rm -rf "$assets" && mkdir -p "$assets"
"$bin" man >"$assets/vipd.1"
"$bin" completions bash >"$assets/vipd.bash"
"$bin" completions zsh >"$assets/_vipd"
"$bin" completions fish >"$assets/vipd.fish"
# A debug build is a layout check: fast compression (xz of the 185 MB
# debug binary took two minutes).
fast=()
if [ "$profile" != release ]; then fast=(--fast); fi
cargo deb --no-build --profile "$profile" "${fast[@]}" 2>/dev/null | tail -n 1
