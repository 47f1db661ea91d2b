#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The README's one-load run: every cell at load time, the summary, and a few
# cells that ran after lockdep turned itself off, answered by the locks.
# In the test guest: scripts/vm --add docs/examples/own-kernel-autorun.sh lockdep sh /rgn/own-kernel-autorun.sh
case ${1:-} in -h | --help) sed -n '4,6s/^# //p' "$0"; echo "usage: own-kernel-autorun.sh (in the test guest)"; exit 0 ;; esac
cd /rgn/modules || exit 1
run() { echo "# $*"; eval "$*"; }
run "time insmod rust_gfp_nolocks.ko autorun=1"
run "dmesg | grep -o 'rust_gfp_nolocks: \(ran\|lock trace\|first cell\).*'"
# shellcheck disable=SC2164 # eval'd by run, which prints it first
run cd /sys/kernel/debug/rust_gfp_nolocks
run "grep 'ctx=raw_spin_lock alloc=\(get_free_page\|kmalloc\|alloc_pages_nolock\) gfp=\(GFP_ATOMIC\|0\) .*path=\(zone_lock\|new_slab\) ' results | grep -o ' ctx=[^ ]* alloc=[^ ]* gfp=[^ ]*\|lockdep_before=[^ ]*\| invalid_wait_context=[^ ]*\|derived_invalid_wait_context=[^ ]*\|derived_lock=[^ ]*\|derived_at=[^ ]*' | paste -d ' ' - - - - - -"
run "grep -c . results"
