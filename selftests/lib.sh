# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# The selftests' shared library, sourced by run.sh: where things are, the
# KTAP helpers' wrappers, the module's loading and its counters, the
# kernel's free pages.

MODULE=/rgn/modules/rust_gfp_nolocks.ko
FLAVOR=${RGN_FLAVOR:-}
[ -n "$FLAVOR" ] || read -r FLAVOR </rgn/flavor
# The module's report kinds (its tables file), once it is loaded
# (report_kinds).
KINDS=""

pass() { ktap_test_pass "$FLAVOR: $*"; }
fail() { ktap_test_fail "$FLAVOR: $*"; }
# run_cell, vmstat_pages, write_spec, chain; DEBUGFS and T.
# shellcheck source=selftests/cells.sh
. "$SELFTESTS/cells.sh"
check() {
	desc=$1
	shift
	if "$@"; then pass "$desc"; else fail "$desc"; fi
}

module_loaded() { [ -d /sys/module/rust_gfp_nolocks ]; }
# load_module: loads the module unless it is loaded, and marks the kernel
# log where the totals of phase agreement start counting.
load_module() {
	if ! module_loaded; then
		insmod "$MODULE" || return 1
		echo "rgn: module loaded" >/dev/kmsg
	fi
	report_kinds
}

# report_kinds: KINDS, the report kinds of the module's tables file (the
# names of its counters, in the order of the results line).
report_kinds() {
	[ -n "$KINDS" ] || KINDS=$(sed -n 's/^kind [0-9]* \([a-z_]*\) .*/\1/p' "$DEBUGFS/tables" | tr '\n' ' ')
}

# counts_with KIND: the report counts of a results line whose one report
# is a KIND (none: "-"), " KIND=N ... ", in the module's order.
counts_with() {
	report_kinds
	_counts=" "
	for _k in $KINDS; do
		_counts="$_counts$_k=$([ "$_k" = "$1" ] && echo 1 || echo 0) "
	done
	echo "$_counts"
}

# free_pages: pages that are free or accounted to some consumer: MemFree
# and the per-cpu lists, plus buffers, page cache, slab, kernel stacks, page
# tables, vmalloc, per-cpu areas and anonymous memory. A page taken from the
# page allocator and never freed is in none of these, so a leaked page, and
# only that, lowers it; a leaked kmalloc() shows in Slab (the cycles test).
free_pages() {
	pcp=$(awk '$1 == "count:" { n += $2 } END { print n + 0 }' /proc/zoneinfo)
	awk -v pcp="$pcp" '$1 ~ /^(MemFree|Buffers|Cached|Slab|KernelStack|PageTables|VmallocUsed|Percpu|AnonPages):$/ { kb += $2 }
		END { print int(kb / 4) + pcp }' /proc/meminfo
}

# settled_free_pages: free pages once deferred frees (exited tasks' stacks,
# RCU callbacks) have run, with every CPU's vmstat deltas folded into the
# global counters (stat_refresh; unfolded, they are off by up to a hundred
# pages) and reclaimable caches dropped: the median of three samples.
settled_free_pages() {
	sleep 1
	for _ in 1 2 3; do
		echo 2 >/proc/sys/vm/drop_caches
		echo 1 >/proc/sys/vm/stat_refresh
		free_pages
		sleep 0.2
	done | sort -n | sed -n 2p
}

counter() { cat "$DEBUGFS/counters/$1"; }

meminfo_kb() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

# snapshot: sets SNAPSHOT to every counter and the number of result lines,
# read with builtins only (a fork costs tens of ms under TCG).
snapshot() {
	report_kinds
	SNAPSHOT=""
	for _c in $KINDS allocs_ok allocs_failed cells_run cells_refused unattributed; do
		read -r _v <"$DEBUGFS/counters/$_c"
		SNAPSHOT="$SNAPSHOT$_c=$_v "
	done
	_n=0
	while IFS= read -r _line; do _n=$((_n + 1)); done <"$DEBUGFS/results"
	SNAPSHOT="${SNAPSHOT}results=$_n"
}

# drift_from FREE_BEFORE TOLERANCE: settled free pages minus FREE_BEFORE. A
# leak persists, noise does not: past TOLERANCE, measure again after another
# pause, up to three times.
drift_from() {
	for _ in 1 2 3; do
		_drift=$(($(settled_free_pages) - $1))
		[ "${_drift#-}" -gt "$2" ] || break
	done
	echo "$_drift"
}
