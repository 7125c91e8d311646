#!/bin/bash
# Captures a real bash's /proc files as fixture text for tests/task_readers.rs
# (its pid renamed 4242). Usage: capture-task.sh tests/fixtures/task-6.18/4242
set -eu
D=$1
mkdir -p "$D/fdinfo" "$D/net" "$D/task/4242"
bash -c 'exec 3</etc/os-release; read -n 7 -u 3 x; sleep 30 & wait' &
P=$!
sleep 0.5
cp /proc/$P/maps /proc/$P/io /proc/$P/status "$D/"
cp /proc/$P/fdinfo/3 "$D/fdinfo/3"
cp /proc/$P/task/$P/status /proc/$P/task/$P/children "$D/task/4242/"
head -1 /proc/$P/net/unix > "$D/net/unix"
pkill -P $P sleep
wait $P || true
