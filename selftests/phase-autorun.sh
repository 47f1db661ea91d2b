# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phase autorun (a fresh boot): the run-all summary, and autorun=1.

# -- autorun (fresh boot) -----------------------------------------------------

# Lockdep reports once per boot. "all" with raw_spin_lock x GFP_ATOMIC for
# the two page allocators runs get_free_page then get_free_pages, both
# through zone->lock (a spinlock_t) under a raw lock: the first raises
# lockdep's report, which is its check; the second starts with lockdep off.
# The summary (autorun's) must count one unchecked cell and name the second.
# Then autorun=1 at load time runs every case of the cases file (controls=0:
# all but the controls) and logs its summary.
phase_autorun() {
	insmod "$MODULE"
	armed=$(cat "$DEBUGFS/lockdep")
	if [ "$armed" != armed ]; then
		fail "autorun summary: lockdep was already off before the run (needs a fresh boot)"
		rmmod rust_gfp_nolocks
		return
	fi
	write_spec "all ctx=raw_spin_lock alloc=get_free_page,get_free_pages gfp=GFP_ATOMIC"
	summary=$(dmesg | grep 'rust_gfp_nolocks: ran ' | tail -n 1)
	first=$(dmesg | grep 'rust_gfp_nolocks: first cell not checked by lockdep' | tail -n 1)
	want="ctx=raw_spin_lock alloc=get_free_pages gfp=GFP_ATOMIC order=4 path=zone_lock n=4096"
	case "$summary|$first" in
	*"ran 2 cells: "*" 1 not checked by lockdep"*"|"*"echo '$want' > run"*)
		pass "run-all summary: 2 cells, 1 not checked (the first one's own report was its check), names '$want'" ;;
	*) fail "run-all summary: '$summary' / '$first' (want 2 cells, 1 not checked, first: $want)" ;;
	esac
	cases=$(grep -c -v '^control=' "$DEBUGFS/cases")
	rmmod rust_gfp_nolocks
	insmod "$MODULE" autorun=1 controls=0
	ran=$(wc -l <"$DEBUGFS/results")
	summary=$(dmesg | grep 'rust_gfp_nolocks: ran ' | tail -n 1)
	case $summary in
	*"ran $ran cells: "*)
		if [ "$ran" -eq "$cases" ]; then
			pass "autorun=1 controls=0: ran every one of the $cases non-control cases at load time and logged a summary"
		else
			fail "autorun=1 controls=0: ran $ran cells, the cases file lists $cases"
		fi
		;;
	*) fail "autorun=1: no summary for $ran cells ('$summary')" ;;
	esac
	rmmod rust_gfp_nolocks
}
