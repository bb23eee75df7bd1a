#!/usr/bin/env bash
# Builds the .deb: the binary, the unit, the man page, shell completions,
# the example configuration as /etc/vipd/rules.yaml (a conffile), and the
# alert rules and dashboard. Needs cargo-deb (`cargo install cargo-deb`).
#
#   packaging/build-deb.sh            # release build (fat LTO, a few minutes)
#   PROFILE=dev packaging/build-deb.sh  # the debug build, for a layout check
#
# Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
if [ "$profile" = release ]; then dir=release; else dir=debug; fi
cargo build --profile "$profile" --bin vipd
bin=target/$dir/vipd
assets=target/deb-assets
rm -rf "$assets" && mkdir -p "$assets"
"$bin" man >"$assets/vipd.1"
"$bin" completions bash >"$assets/vipd.bash"
"$bin" completions zsh >"$assets/_vipd"
"$bin" completions fish >"$assets/vipd.fish"
cargo deb --no-build --no-strip --profile "$profile" 2>/dev/null | tail -n 1
