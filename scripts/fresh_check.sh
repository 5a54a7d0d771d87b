#!/usr/bin/env bash
# Fresh check of the committed tree: a new clone, new venv, new HOME, empty GENERATOR_CACHE; the README's two commands.
set -uo pipefail
root=$(mktemp -d /tmp/fresh.XXXX)
git clone -q "$(cd "$(dirname "$0")/.." && pwd)" "$root/repo"
cd "$root/repo"
git log --oneline -1
mkdir -p "$root/home" "$root/cache"
export HOME="$root/home" GENERATOR_CACHE="$root/cache"
unset RAY_ADDRESS
t0=$(date +%s)
make setup > "$root/setup.log" 2>&1; echo "setup rc $? in $(( $(date +%s) - t0 )) s"
t1=$(date +%s)
make quickstart > "$root/quickstart.log" 2>&1; echo "quickstart rc $? in $(( $(date +%s) - t1 )) s"
tail -5 "$root/quickstart.log"
t2=$(date +%s)
bash .ci/run > "$root/test.log" 2>&1; echo "ci rc $? in $(( $(date +%s) - t2 )) s"
grep -E "passed|failed|error" "$root/test.log" | tail -6
echo "logs in $root"
