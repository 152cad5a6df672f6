#!/usr/bin/env bash
# Runs readyserve side by side with nginx (stock and tuned), lighttpd and the `limit` probe,
# all pinned the same way, using the shared peer benchmark. Builds the release binary first.
#   benches/vs-nginx.sh            # full run (about 4 minutes)
#   benches/vs-nginx.sh --quick    # one short repetition (about 40 s)
# Extra arguments go to peer-bench.sh (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec ../shared/bench/peer-bench.sh --probe \
  --ours "$PWD/target/release/readyserve --listen 127.0.0.1:{PORT} --root {ROOT} --access-log off" "$@"
