#!/bin/sh
# Stand-in for the real `selfheal` binary, used by selfheal-lab ONLY to test
# its own plumbing before the selfheal CLI exists (selfheal-lab --placeholder).
# It detects nothing and says so: it emits one start event naming itself, so
# reports built from it are marked as placeholder runs and carry no numbers.
log=-
while [ $# -gt 0 ]; do
    case "$1" in
    --event-log) log=$2; shift ;;
    esac
    shift
done
now_ms() { echo $(( $(date +%s) * 1000 )); }
line="{\"time_unix_ms\":$(now_ms),\"kind\":\"start\",\"severity\":\"info\",\"source\":\"placeholder\",\"message\":\"selfheal placeholder: detects nothing\"}"
if [ "$log" = - ]; then echo "$line"; else echo "$line" > "$log"; fi
exec sleep 100000
