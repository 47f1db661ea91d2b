# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phase robust: concurrent writers, rmmod during a run, selections by
# name, refusals, objects left at unload, and insmod/rmmod cycles that
# leave no memory behind.

# How far settled free pages may drift around the 50 insmod/rmmod cycles
# without a leak: measured -18 to +58, as the kernel frees vmap areas
# lazily; a leak of three pages per load would be -150. Slab and vmalloc
# kB likewise.
CYCLE_PAGES_TOLERANCE=128
CYCLE_KB_TOLERANCE=256

# -- robust ------------------------------------------------------------------

# run_selection SELECTION: the module freshly loaded, "all SELECTION" written
# to run (one write); sets CELLS (results lines), SPECS (their specs, one a
# line) and SUMMARY (the summary it logged).
run_selection() {
	! module_loaded || rmmod rust_gfp_nolocks
	load_module
	echo "rgn: selection $1" >/dev/kmsg
	write_spec "all $1"
	CELLS=$(wc -l <"$DEBUGFS/results")
	SPECS=$(cut -d ' ' -f 2-4 "$DEBUGFS/results")
	SUMMARY=$(dmesg | awk -v m="rgn: selection $1" 'index($0, m) { l = "" } /rust_gfp_nolocks: ran / { l = $0 } END { print l }')
}

# A selection by name ("all KEY=VALUE...", the grammar of make matrix
# CELLS=) runs exactly the cases it names, in run-all order, and logs a
# summary; names are the tables' own, whatever rows this kernel has.
check_selection() {
	run_selection "ctx=process alloc=get_free_page gfp=GFP_ATOMIC"
	if [ "$CELLS" -eq 1 ] && [ "$SPECS" = "ctx=process alloc=get_free_page gfp=GFP_ATOMIC" ] &&
		[ -n "$SUMMARY" ]; then
		pass "run 'all ctx=process alloc=get_free_page gfp=GFP_ATOMIC': ran exactly that cell and logged a summary"
	else
		fail "run all SELECTION: $CELLS cells ('$SPECS'), summary '$SUMMARY'"
	fi
	# A second run without a reset: its summary counts its own cells.
	echo "rgn: selection second" >/dev/kmsg
	write_spec "all ctx=process alloc=get_free_page gfp=GFP_NOWAIT,0"
	total=$(wc -l <"$DEBUGFS/results")
	summary=$(dmesg | awk '/rgn: selection second/ { l = "" } /rust_gfp_nolocks: ran / { l = $0 } END { print l }')
	case "$total|$summary" in
	"3|"*"ran 2 cells: "*) pass "a second run-all's summary counts its own 2 cells, not the 3 in results" ;;
	*) fail "second run-all: $total results, summary '$summary' (want 3 results, 'ran 2 cells')" ;;
	esac
	# A second allocator: kmalloc where this kernel has the slab rows.
	second=get_free_pages
	! grep -q ' alloc=kmalloc ' "$DEBUGFS/cases" || second=kmalloc
	rmmod rust_gfp_nolocks
	run_selection "ctx=process alloc=get_free_page,$second gfp=GFP_ATOMIC,GFP_NOWAIT"
	want=$(grep -E "^ctx=process alloc=(get_free_page|$second) gfp=(GFP_ATOMIC|GFP_NOWAIT) " "$DEBUGFS/cases" | cut -d ' ' -f 1-3)
	if [ "$SPECS" = "$want" ] && [ "$CELLS" -ge 2 ]; then
		pass "run 'all' with two values for two keys: ran the $CELLS cases of the cases file that match, in its order"
	else
		fail "run 'all' with value lists: ran '$SPECS', the cases file has '$want'"
	fi
	rmmod rust_gfp_nolocks
}

# result_of SPEC_START: the results line of the cell whose spec starts so.
result_of() { grep -F "kind=alloc $1 " "$DEBUGFS/results" | tail -n 1; }

# A blocking mask in an atomic section only reports while the free lists
# serve it; short of memory it would enter reclaim and really sleep there.
# With about 20 MiB left (ramfs pages cannot be reclaimed), a GFP_KERNEL
# cell under raw_spin_lock that may take 48 MiB (n=8192 and the margin) is
# refused with ENOMEM
# and logged, and its result says so; "run all" (autorun's loop) records
# such a refusal and runs the next cell (GFP_ATOMIC never reclaims), and
# the write succeeds.
check_low_memory_refusal() {
	load_module
	fill_mb=$(($(meminfo_kb MemAvailable) / 1024 - 24))
	dd if=/dev/zero of=/tmp/fill bs=1M count="$fill_mb" 2>/dev/null
	available_mb=$(($(meminfo_kb MemAvailable) / 1024))
	spec="ctx=raw_spin_lock alloc=get_free_page gfp=GFP_KERNEL order=0 path=zone_lock n=8192"
	err=$(write_spec "$spec" 2>&1)
	logged=$(dmesg | grep 'rust_gfp_nolocks: run: refusing' | tail -n 1)
	line=$(result_of "$spec")
	case "$err|$line" in
	*"Cannot allocate memory"*"|"*" outcome=refused_low_memory "*" allocated=0 "*)
		if [ -n "$logged" ]; then
			pass "low memory ($available_mb MiB available): '$spec' refused with ENOMEM, logged, recorded as refused_low_memory"
		else
			fail "low memory: refused, but nothing logged"
		fi
		;;
	*) fail "low memory ($available_mb MiB available): '$spec' not refused as it should be (write: '$err'; result: '$line')" ;;
	esac
	rmmod rust_gfp_nolocks
	load_module
	if write_spec "all ctx=raw_spin_lock alloc=get_free_page gfp=GFP_KERNEL,GFP_ATOMIC"; then
		kernel=$(result_of "ctx=raw_spin_lock alloc=get_free_page gfp=GFP_KERNEL")
		atomic=$(result_of "ctx=raw_spin_lock alloc=get_free_page gfp=GFP_ATOMIC")
		case "$kernel|$atomic" in
		*" outcome=refused_low_memory "*"|"*" outcome=ran "*) pass "low memory, run all with a selection: the write succeeded, GFP_KERNEL recorded as refused, GFP_ATOMIC ran after it" ;;
		*) fail "low memory, run all with a selection: results '$kernel' and '$atomic'" ;;
		esac
	else
		fail "low memory, run all with a selection: the write failed because a cell was refused"
	fi
	rmmod rust_gfp_nolocks
	rm -f /tmp/fill
}

# An order-10 GFP_KERNEL cell may take 4096 blocks of 4 MiB: more than a
# 1 GiB guest has at all, so it must be refused rather than risk direct
# reclaim under a raw lock. This checks that the gate is there, not its
# arithmetic (the low-memory test is closer to that).
check_high_order_refusal() {
	load_module
	spec="ctx=raw_spin_lock alloc=get_free_pages gfp=GFP_KERNEL order=10 path=zone_lock n=4096"
	err=$(write_spec "$spec" 2>&1)
	line=$(result_of "$spec")
	case "$err|$line" in
	*"Cannot allocate memory"*"|"*" outcome=refused_low_memory "*) pass "order 10 GFP_KERNEL under raw_spin_lock: refused (4096 blocks of order 10 cannot stay above the watermarks)" ;;
	*) fail "order 10 GFP_KERNEL under raw_spin_lock was not refused (write: '$err'; result: '$line')" ;;
	esac
}

# write_status SPEC FILE: writes SPEC to run; the write's exit status goes
# to FILE, its error message to FILE.err.
write_status() {
	status=0
	write_spec "$1" 2>"$2.err" || status=$?
	echo "$status" >"$2"
}

# Two writers at once, with different known outcomes: might_sleep() under
# preempt_disable() is exactly one __might_resched() report, the empty
# section none. Each line must carry its own cell's outcome.
check_two_writers() {
	load_module
	echo 1 >"$DEBUGFS/reset"
	write_status control=might_sleep_under_preempt_disable /tmp/writer_a &
	write_status control=empty /tmp/writer_b &
	wait
	a=$(grep 'control=might_sleep_under_preempt_disable ' "$DEBUGFS/results")
	b=$(grep 'control=empty ' "$DEBUGFS/results")
	problems=""
	[ "$(cat /tmp/writer_a)$(cat /tmp/writer_b)" = 00 ] || problems="$problems exit $(cat /tmp/writer_a)/$(cat /tmp/writer_b);"
	[ "$(wc -l <"$DEBUGFS/results")" -eq 2 ] || problems="$problems $(wc -l <"$DEBUGFS/results") results;"
	[ -n "$KINDS" ] || problems="$problems no report kinds in tables;"
	case $a in *"$(counts_with sleeping_in_atomic)"*) ;; *) problems="$problems might_sleep line '$a';" ;; esac
	case $b in *"$(counts_with -)"*) ;; *) problems="$problems empty line '$b';" ;; esac
	if [ -z "$problems" ]; then
		pass "two writers at once: both complete; might_sleep_under_preempt_disable has its one sleeping_in_atomic, empty is clean"
	else
		fail "two writers at once:$problems"
	fi
}

# rmmod while 'run all' runs: a cell must be running (results appear), the
# writer must get ENODEV back (the module stopped before its next cell),
# and the module must be gone.
check_rmmod_during_run() {
	load_module
	echo 1 >"$DEBUGFS/reset"
	write_status all /tmp/writer_all &
	writer=$!
	# debugfs files have no size: count the lines.
	waited=0
	while [ "$(wc -l <"$DEBUGFS/results")" -eq 0 ] && [ "$waited" -lt 100 ]; do
		sleep 0.2
		waited=$((waited + 1))
	done
	running=$(wc -l <"$DEBUGFS/results")
	if [ "$running" -eq 0 ]; then
		fail "rmmod during 'run all': no cell ran within 20 s"
		wait "$writer"
		return
	fi
	rmmod rust_gfp_nolocks
	wait "$writer"
	status=$(cat /tmp/writer_all)
	err=$(cat /tmp/writer_all.err)
	if module_loaded; then
		fail "rmmod during 'run all': the module is still loaded"
	elif [ "$status" -ne 0 ] && case $err in *"No such device"*) true ;; *) false ;; esac then
		pass "rmmod during 'run all' ($running cells done): module gone, the writer got ENODEV ('$err')"
	else
		fail "rmmod during 'run all' ($running cells done): the writer got status $status ('$err'), not ENODEV"
	fi
}

# Every object the kfree_rcu() rows handed to RCU is freed by the time the
# module is gone: its cache's kmem_cache_destroy() waits for them and warns
# ("Slab cache still has objects") if one is still allocated.
check_rcu_unload() {
	grep -q ' alloc=kfree_rcu ' "$DEBUGFS/cases" 2>/dev/null || load_module
	if ! grep -q ' alloc=kfree_rcu ' "$DEBUGFS/cases"; then
		pass "kfree_rcu() rows: none on this kernel, no cache to check at unload"
		return
	fi
	echo 1 >"$DEBUGFS/reset"
	echo "rgn: rcu unload begin" >/dev/kmsg
	# Every row in process context, and the two-argument forms under a raw
	# lock and in hard irq too (the headless form's sleep report there is
	# not what this checks); where the bulk path is the rows' (PREEMPT_RT),
	# its page cache run empty too, which leaves objects on the rcu_head
	# list.
	{
		grep ' alloc=k[v]*free_rcu' "$DEBUGFS/cases" |
			grep '^ctx=process \|^ctx=\(raw_spin_lock\|hardirq\) alloc=kfree_rcu'
		if grep -q '^ctx=process alloc=kfree_rcu .* path=krc ' "$DEBUGFS/cases"; then
			echo "ctx=raw_spin_lock alloc=kfree_rcu gfp=0 path=krc_empty"
			echo "ctx=process alloc=kvfree_rcu_mightsleep gfp=0 path=krc_empty"
		fi
	} | while IFS= read -r spec; do
		echo "$spec" >"$DEBUGFS/run" 2>/dev/null || true
	done
	ran=$(grep ' alloc=k[v]*free_rcu' "$DEBUGFS/results" | grep -c ' outcome=ran ')
	rmmod rust_gfp_nolocks
	log=$(dmesg | sed -n '/rgn: rcu unload begin/,$p')
	if module_loaded; then
		fail "kfree_rcu() objects at unload: the module is still loaded"
	elif [ "$ran" -eq 0 ]; then
		fail "kfree_rcu() objects at unload: no kfree_rcu() cell ran"
	elif printf '%s\n' "$log" | grep -q 'still has objects\|WARNING:\|BUG:.*rust_gfp_nolocks_rcu'; then
		fail "kfree_rcu() objects at unload: the kernel warned after $ran cells: $(printf '%s\n' "$log" | grep -m1 'still has objects\|WARNING:')"
	else
		pass "kfree_rcu() objects at unload: $ran cells handed objects to RCU, the cache was destroyed without a warning (no object left)"
	fi
}

# reset clears the results and every counter, unattributed included: the
# interrupt control leaves one unattributed report behind first.
check_reset() {
	load_module
	write_spec control=might_sleep_in_interrupt_on_cell_cpu
	snapshot
	before=$SNAPSHOT
	echo 1 >"$DEBUGFS/reset"
	snapshot
	zero=""
	for _c in $KINDS allocs_ok allocs_failed cells_run cells_refused unattributed; do
		zero="$zero$_c=0 "
	done
	zero="${zero}results=0"
	case $before in
	*" unattributed=0 "*) fail "reset: the interrupt control left no unattributed report to clear ($before)" ;;
	*)
		if [ "$SNAPSHOT" = "$zero" ]; then
			pass "reset clears the results and every counter, unattributed too ($before -> all 0)"
		else
			fail "reset left '$SNAPSHOT' (before: $before)"
		fi
		;;
	esac
}

phase_robust() {
	check_rcu_unload
	check_reset
	check_two_writers
	check_rmmod_during_run
	check_selection
	check_high_order_refusal
	check_low_memory_refusal

	# Module loads leave nothing behind: no unreclaimable slab (kmalloc),
	# no vmalloc, no pages. The kernel frees vmap areas lazily, in batches,
	# so up to CYCLE_KB_TOLERANCE of either comes and goes between runs
	# (measured: slab 0 to 172 kB, vmalloc -72 to 112 kB; 0 for this module
	# alone over 100 cycles). The tolerance catches a leaked per-load
	# structure (5 KiB a cycle); small object leaks are kmemleak's job.
	slab_before=$(meminfo_kb SUnreclaim)
	vmalloc_before=$(meminfo_kb VmallocUsed)
	free_before=$(settled_free_pages)
	failures=0
	i=0
	while [ "$i" -lt 50 ]; do
		insmod "$MODULE" && [ -d "$DEBUGFS" ] && rmmod rust_gfp_nolocks && [ ! -d "$DEBUGFS" ] || failures=$((failures + 1))
		i=$((i + 1))
	done
	drift=$(drift_from "$free_before" "$CYCLE_PAGES_TOLERANCE")
	slab=$(($(meminfo_kb SUnreclaim) - slab_before))
	vmalloc=$(($(meminfo_kb VmallocUsed) - vmalloc_before))
	desc="50 insmod/rmmod cycles: $failures failed; unreclaimable slab ${slab} kB, vmalloc ${vmalloc} kB, free pages $drift"
	tolerances="tolerances: $CYCLE_KB_TOLERANCE kB, $CYCLE_KB_TOLERANCE kB, $CYCLE_PAGES_TOLERANCE pages"
	if [ "$failures" -eq 0 ] && [ "$slab" -le "$CYCLE_KB_TOLERANCE" ] && [ "$vmalloc" -le "$CYCLE_KB_TOLERANCE" ] &&
		[ "${drift#-}" -le "$CYCLE_PAGES_TOLERANCE" ]; then
		pass "$desc ($tolerances)"
	else
		fail "$desc: leak? ($tolerances)"
	fi
}
