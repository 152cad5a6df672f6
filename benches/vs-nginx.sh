#!/usr/bin/env bash
# The old name of the peer benchmark; benches/peers.sh is the script (see its --help).
exec "$(dirname "$0")/peers.sh" "$@"
