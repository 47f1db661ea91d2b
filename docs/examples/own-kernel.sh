#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# docs/reference.md's selection run: the module loaded, a selection by name
# written to run, results and counters read back, a wrong name refused.
# In the test guest: scripts/vm --add docs/examples/own-kernel.sh lockdep sh /rgn/own-kernel.sh
case ${1:-} in -h | --help) sed -n '4,6s/^# //p' "$0"; echo "usage: own-kernel.sh (in the test guest)"; exit 0 ;; esac
cd /rgn/modules || exit 1
run() { echo "# $*"; eval "$*"; }
run insmod rust_gfp_nolocks.ko
# shellcheck disable=SC2164 # eval'd by run, which prints it first
run cd /sys/kernel/debug/rust_gfp_nolocks
run "echo 'all ctx=preempt_disable,raw_spin_lock alloc=get_free_page,alloc_pages_nolock gfp=GFP_ATOMIC,0 path=zone_lock' > run"
run "grep -o 'ctx=[^ ]* alloc=[^ ]* gfp=[^ ]*\|observed_path=[^ ]*\|lockdep_before=[^ ]*\|invalid_wait_context=[^ ]*\|sleeping_in_atomic=[^ ]*\|lock=[^ ]*' results | paste -d ' ' - - - - - -"
run "grep . counters/*"
run "dmesg | grep -A3 'BUG: Invalid wait context' | head -4"
run "dmesg | grep 'rust_gfp_nolocks: ran\|first cell not'"
run "echo 'all ctx=raw' > run"
run "dmesg | tail -n 1"
