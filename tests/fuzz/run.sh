#!/usr/bin/env bash
# Runs libFuzzer harnesses: run.sh BUILD_DIR SECONDS|replay TARGET...
# Each harness runs for SECONDS (-max_total_time) from its seeds (tests/fuzz/corpus/<t>) and its kept crash inputs
# (tests/fuzz/crashes/<t>, so a fixed bug stays fixed); new corpus entries go to BUILD_DIR/corpus/<t>, new crash
# inputs to BUILD_DIR/crashes/<t>/. Every harness runs even when one crashes; the exit status is 1 if any did.
# "replay" runs each harness once over its kept crash inputs only.
set -uo pipefail
build=$1 secs=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
logs=$build/logs
mkdir -p "$logs"
failed=()
rows=()
for t in "$@"; do
    bin=$build/fuzz_$t
    seeds=$here/corpus/$t crashes=$here/crashes/$t work=$build/corpus/$t out=$build/crashes/$t
    mkdir -p "$work" "$out"
    case $t in
    wsclient | relay) maxlen="65536 -len_control=0" ;; # the bugs they guard need long paths
    *) maxlen=8192 ;;
    esac
    log=$logs/$t.log
    start=$(date +%s.%N)
    if [ "$secs" = replay ]; then
        inputs=()
        [ -d "$crashes" ] && mapfile -t inputs < <(find "$crashes" -type f | sort)
        if [ ${#inputs[@]} -eq 0 ]; then
            rows+=("$(printf '%-12s %8s %12s %s' "$t" 0 0 "ok (no kept crash inputs)")")
            continue
        fi
        nice -n 10 "$bin" -runs=1 "${inputs[@]}" >"$log" 2>&1
        rc=$?
    else
        dirs=("$work" "$seeds")
        [ -d "$crashes" ] && [ -n "$(ls -A "$crashes" 2>/dev/null)" ] && dirs+=("$crashes")
        nice -n 10 "$bin" -max_total_time="$secs" -max_len=$maxlen -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
            -artifact_prefix="$out/" "${dirs[@]}" >"$log" 2>&1
        rc=$?
    fi
    took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')
    [ -n "$runs" ] || runs=$(grep -oE 'Done [0-9]+ runs' "$log" | tail -1 | grep -oE '[0-9]+')
    [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    if [ $rc -eq 0 ]; then
        result=ok
    else
        failed+=("$t")
        what=$(grep -m1 -E 'ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:|FUZZ CONTRACT VIOLATED' "$log" | cut -c1-150)
        input=$(grep -oE "(Test unit written to|Running:) [^ ]+" "$log" | tail -1 | awk '{print $NF}')
        result="CRASH ${input:-?}: ${what:-exit $rc} (log: $log)"
    fi
    rows+=("$(printf '%-12s %8.1f %12s %s' "$t" "$took" "${runs:-?}" "$result")")
done
rm -f /tmp/fuzz_peer_json.*.tags
# a harness that writes files must write its own: fuzz_peer_json once renamed a temporary file over /dev/null
if [ ! -c /dev/null ]; then
    echo "fuzz: /dev/null is no longer a character device: a harness wrote over it" >&2
    exit 1
fi
printf '%-12s %8s %12s %s\n' target seconds executions result
printf '%s\n' "${rows[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: crashed: ${failed[*]}" >&2
    exit 1
fi
