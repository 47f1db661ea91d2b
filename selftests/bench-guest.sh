#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The guest side of scripts/bench's in-guest figures, one job each:
#   one-load SELECTION...  each selection (an argument, e.g. "all ctx=process")
#                          in one write of run, after a reset, with no wait
#                          for the sleep check: "CELLS T0 T1" a line (uptime)
#   probe-cost RUNS        a lock-heavy loop (100 fork+exec of cat) without
#                          the module, with it loaded and idle, after rmmod,
#                          RUNS times: "WHAT T0 T1" a line
set -eu
MODULE=/rgn/modules/rust_gfp_nolocks.ko
DEBUGFS=/sys/kernel/debug/rust_gfp_nolocks

one_load() {
	insmod "$MODULE" sleep_check_wait=0
	for sel in "$@"; do
		echo 1 >"$DEBUGFS/reset"
		read -r t0 _ </proc/uptime
		echo "$sel" >"$DEBUGFS/run"
		read -r t1 _ </proc/uptime
		echo "$(wc -l <"$DEBUGFS/results") $t0 $t1"
	done
	rmmod rust_gfp_nolocks
}

lock_loop() {
	read -r t0 _ </proc/uptime
	i=0
	while [ "$i" -lt 100 ]; do
		cat /proc/self/stat >/dev/null
		i=$((i + 1))
	done
	read -r t1 _ </proc/uptime
	echo "$1 $t0 $t1"
}

probe_cost() {
	r=0
	while [ "$r" -lt "$1" ]; do
		lock_loop without
		insmod "$MODULE"
		lock_loop loaded
		rmmod rust_gfp_nolocks
		lock_loop after_rmmod
		r=$((r + 1))
	done
}

case ${1:-} in
one-load)
	shift
	one_load "$@"
	;;
probe-cost) probe_cost "${2:?probe-cost needs a number of runs}" ;;
-h | --help) sed -n '3,10s/^# \{0,1\}//p' "$0" ;;
*)
	echo "bench-guest.sh: unknown job '${1:-}' (--help lists them)" >&2
	exit 2
	;;
esac
