#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# kselftest-style KTAP tests of rust_gfp_nolocks, run inside the test guest.
#
# usage: run.sh PHASE...
#   config      the running kernel has every option of its flavor's fragments
#               and a sub-microsecond clocksource
#   load        the module loads, its debugfs files exist
#   badinput    malformed specs get EINVAL, a log line naming the token, no change
#   cells:all   every cell of the cases file against expectations.txt
#   cells:FILE  the cells listed in FILE (one spec a line), stopping after the
#               first cell that disarms lockdep (the rest wait for a new boot)
#   matrix:all, matrix:FILE
#               as cells:FILE, printing each result without judging it (make matrix)
#   agreement   module counters equal an independent count of the kernel log
#               and the per-cell sums; no page leaked around cells:all
#   robust      concurrent writers, rmmod during a run, autorun, and 50
#               insmod/rmmod cycles that leave no memory behind
# Cells that lockdep could not check are printed as "# RETRY <spec>" for the
# host to run again in a fresh boot.
set -u

SELFTESTS=$(dirname "$0")
# The kernel tree's helpers, copied into the guest by scripts/vm.
# shellcheck source=/dev/null
. "$SELFTESTS/ktap_helpers.sh"

MODULE=/rgn/modules/rust_gfp_nolocks.ko
DEBUGFS=/sys/kernel/debug/rust_gfp_nolocks
FLAVOR=$(cat /rgn/flavor)
KINDS="invalid_wait_context sleeping_in_atomic scheduling_while_atomic lockdep_other warning"
# How far settled free pages (see free_pages) may drift without a leak.
# Measured around the full matrix: -9 to +13; a leak of one page per cell
# would be -107, and the module's own counters catch a single page. Around
# the 50 cycles: -18 to +58, as the kernel frees vmap areas lazily; a leak of
# three pages per load would be -150. Past a tolerance, drift_from measures
# again.
MATRIX_PAGES_TOLERANCE=48
CYCLE_PAGES_TOLERANCE=128
CYCLE_KB_TOLERANCE=256

pass() { ktap_test_pass "$FLAVOR: $*"; }
fail() { ktap_test_fail "$FLAVOR: $*"; }
check() {
	desc=$1
	shift
	if "$@"; then pass "$desc"; else fail "$desc"; fi
}

module_loaded() { [ -d /sys/module/rust_gfp_nolocks ]; }
load_module() { module_loaded || insmod "$MODULE"; }

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

# write_spec SPEC: one write of SPEC to run; a refusal is reported on stderr
# (echo, not printf: busybox's printf does not report a failed write).
write_spec() { echo "$1" >"$DEBUGFS/run"; }

meminfo_kb() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

counters_snapshot() {
	for c in $KINDS allocs_ok allocs_failed pages_freed cells_run; do
		printf '%s=%s ' "$c" "$(counter "$c")"
	done
}

# -- config ------------------------------------------------------------------

phase_config() {
	for frag in base "$FLAVOR"; do
		missing=""
		total=0
		# shellcheck disable=SC2013 # one CONFIG_X=v word per line
		for opt in $(sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*=.*\)$/\1/p' \
			-e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1=n/p' "/rgn/configs/$frag.config"); do
			total=$((total + 1))
			name=${opt%%=*}
			want=${opt#*=}
			got=$(zcat /proc/config.gz | sed -n "s/^$name=//p")
			[ "${got:-n}" = "$want" ] || missing="$missing $name=${got:-n}(want $want)"
		done
		if [ -z "$missing" ]; then
			pass "kernel_config: all $total options of $frag.config are set"
		else
			fail "kernel_config: $frag.config options missing:$missing"
		fi
	done
	check_clocksource
}

# Timings need a clocksource finer than a microsecond: not jiffies, which
# is what a guest without an HPET or ACPI PM timer reference falls back to.
check_clocksource() {
	cs=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)
	case $cs in
	tsc | hpet | acpi_pm) pass "clocksource: $cs (sub-microsecond; available: $(cat /sys/devices/system/clocksource/clocksource0/available_clocksource))" ;;
	*) fail "clocksource: $cs is coarse; timings would move in jiffies (needs HPET or the ACPI PM timer as a TSC reference)" ;;
	esac
}

# -- load --------------------------------------------------------------------

phase_load() {
	check "module: insmod rust_gfp_nolocks.ko" load_module
	missing=""
	for f in run reset results cases lockdep counters/cells_run counters/allocs_ok counters/pages_freed; do
		[ -e "$DEBUGFS/$f" ] || missing="$missing $f"
	done
	for k in $KINDS; do
		[ -e "$DEBUGFS/counters/$k" ] || missing="$missing counters/$k"
	done
	if [ -z "$missing" ]; then pass "module: debugfs files present"; else fail "module: debugfs files missing:$missing"; fi
	echo "rgn: module loaded" >/dev/kmsg
}

# -- badinput ----------------------------------------------------------------

# bad_spec DESCRIPTION TOKEN: writes the spec in /tmp/spec (one write) and
# checks EINVAL, a log line naming TOKEN, and unchanged counters and results.
bad_spec() {
	before=$(counters_snapshot)
	lines_before=$(wc -l <"$DEBUGFS/results")
	err=$(dd if=/tmp/spec of="$DEBUGFS/run" bs=65536 count=1 2>&1)
	logged=$(dmesg | awk '/rgn: bad input case done/ { l = "" } /rust_gfp_nolocks: (run|reset):/ { l = $0 } END { print l }')
	after=$(counters_snapshot)
	lines_after=$(wc -l <"$DEBUGFS/results")
	problems=""
	case $err in *"Invalid argument"*) ;; *) problems="$problems write did not fail with EINVAL ($err);" ;; esac
	case $logged in *"$2"*) ;; *) problems="$problems log line does not name '$2' ($logged);" ;; esac
	[ "$before" = "$after" ] && [ "$lines_before" = "$lines_after" ] || problems="$problems counters or results changed;"
	if [ -z "$problems" ]; then
		pass "bad input $1: EINVAL, logged '$2', nothing changed"
	else
		fail "bad input $1:$problems"
	fi
	# Make the next case's log line unambiguous.
	echo "rgn: bad input case done" >/dev/kmsg
}

bad() {
	printf '%s' "${2%_}" >/tmp/spec
	bad_spec "$1" "$3"
}

phase_badinput() {
	load_module
	good="ctx=process alloc=get_free_page"
	bad "empty line" "$(printf '\n_')" "empty spec"
	bad "blanks only" "   " "empty spec"
	bad "unknown context" "ctx=bogus alloc=get_free_page gfp=GFP_ATOMIC" "'bogus'"
	bad "unknown allocator" "ctx=process alloc=kmalloc gfp=GFP_ATOMIC" "'kmalloc'"
	bad "unknown mask" "$good gfp=GFP_BOGUS" "'GFP_BOGUS'"
	bad "mask in lower case" "$good gfp=gfp_atomic" "'gfp_atomic'"
	bad "missing gfp" "$good" "missing gfp="
	bad "missing ctx" "alloc=get_free_page gfp=GFP_ATOMIC" "missing ctx="
	bad "order not a number" "ctx=process alloc=get_free_pages gfp=0 order=abc" "'order=abc'"
	bad "negative order" "ctx=process alloc=get_free_pages gfp=0 order=-1" "'order=-1'"
	bad "order above MAX_PAGE_ORDER" "ctx=process alloc=get_free_pages gfp=0 order=11" "'order=11'"
	bad "fixed order changed" "$good gfp=0 order=2" "order 0 only"
	bad "n=0" "$good gfp=0 n=0" "n=0"
	bad "n overflowing u64" "$good gfp=0 n=99999999999999999999999" "'n=99999999999999999999999'"
	bad "n above the cap" "$good gfp=0 n=8193" "'n=8193'"
	bad "unknown key" "$good gfp=0 bogus=1" "unknown key 'bogus'"
	bad "token without =" "$good gfp=0 trailing" "'trailing'"
	bad "key given twice" "ctx=process $good gfp=0" "'ctx' given twice"
	bad "trailing junk after all" "all extra" "'extra'"
	bad "unknown control" "control=nope" "'nope'"
	bad "control with other keys" "control=empty ctx=process" "takes no other key"
	bad "unknown path" "$good gfp=0 path=slow" "'slow'"
	bad "order never on per-cpu lists" "ctx=process alloc=get_free_pages gfp=0 order=4 path=pcp" "per-cpu lists"
	bad "mask alloc_pages_nolock refuses" "ctx=process alloc=alloc_pages_nolock gfp=GFP_ATOMIC" "does not take gfp=GFP_ATOMIC"
	printf 'ctx=process\000alloc=get_free_page gfp=0' >/tmp/spec
	bad_spec "NUL byte" "control character 0x0"
	printf 'ctx=\377\376 alloc=get_free_page gfp=0' >/tmp/spec
	bad_spec "binary bytes" "not UTF-8"
	head -c 300 /dev/zero | tr '\0' a >/tmp/spec
	bad_spec "300-byte spec" "300 bytes"
	head -c 65536 /dev/zero | tr '\0' a >/tmp/spec
	bad_spec "64 KiB write" "65536 bytes"
	printf '2' >/tmp/spec
	err=$(dd if=/tmp/spec of="$DEBUGFS/reset" 2>&1)
	case $err in
	*"Invalid argument"*) pass "bad input to reset: EINVAL" ;;
	*) fail "bad input to reset: '2' was accepted ($err)" ;;
	esac
	rm -f /tmp/spec
}

# -- cells -------------------------------------------------------------------

# run_cell SPEC JUDGE: runs one cell, prints its results line for the host
# and, with JUDGE=1, checks it against the expectations.
run_cell() {
	if ! err=$(write_spec "$1" 2>&1); then
		fail "cell $1: the module refused it ($err)"
		return
	fi
	tail -n 1 "$DEBUGFS/results" >/tmp/cell
	echo "# RESULT $(cat /tmp/cell)"
	if [ "$2" -eq 0 ]; then
		grep -q ' lockdep_before=1 ' /tmp/cell || echo "# RETRY $1"
		return
	fi
	verdict=$(awk -v flavor="$FLAVOR" -f "$SELFTESTS/expect.awk" "$SELFTESTS/expectations.txt" /tmp/cell)
	status=$(printf '%s' "$verdict" | cut -f 1)
	desc=$(printf '%s' "$verdict" | cut -f 2)
	detail=$(printf '%s' "$verdict" | cut -f 3)
	case $status in
	ok) pass "$desc" ;;
	retry) echo "# RETRY $1" ;;
	*)
		fail "$desc"
		echo "# $detail"
		echo "# observed: $(cat /tmp/cell)"
		;;
	esac
}

# phase_cells SOURCE JUDGE: SOURCE is "all" or a file of specs.
phase_cells() {
	load_module
	if [ "$1" = all ]; then
		cat "$DEBUGFS/cases" >/tmp/specs
	else
		cp "$1" /tmp/specs
	fi
	# Cells after lockdep disarms are run again in a fresh boot, so running
	# them now is wasted, except for cells:all, which the tests need as one
	# full matrix in one boot (free pages, detector agreement).
	stop_on_disarm=1
	[ "$1 $2" != "all 1" ] || stop_on_disarm=0
	[ "$stop_on_disarm" -eq 1 ] || settled_free_pages >/tmp/free_before_matrix
	stopped=0
	while IFS= read -r spec; do
		[ -n "$spec" ] || continue
		if [ "$stopped" -eq 1 ]; then
			echo "# RETRY $spec"
			continue
		fi
		run_cell "$spec" "$2"
		[ "$stop_on_disarm" -eq 0 ] || [ "$(cat "$DEBUGFS/lockdep")" = armed ] || stopped=1
	done </tmp/specs
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

# check_no_leak WHAT FREE_BEFORE ALLOCATED FREED: settled free pages are back
# to FREE_BEFORE, and the module freed every page it allocated.
check_no_leak() {
	drift=$(drift_from "$2" "$MATRIX_PAGES_TOLERANCE")
	free_after=$(($2 + drift))
	allocated=$3
	freed=$4
	summary="free pages $2 before, $free_after after (drift $drift, tolerance $MATRIX_PAGES_TOLERANCE); $allocated allocated, $freed freed"
	if [ "${drift#-}" -le "$MATRIX_PAGES_TOLERANCE" ] && [ "$allocated" -eq "$freed" ]; then
		pass "no page leak around $1: $summary"
	else
		fail "page leak around $1? $summary"
	fi
}

# -- agreement ---------------------------------------------------------------

# Counts report headers in the kernel log since the module was loaded, by the
# same rules the module uses, but from dmesg after the fact.
log_report_counts() {
	dmesg | awk '
		/rgn: module loaded/ { on = 1; next }
		!on { next }
		{ sub(/^\[[ 0-9.]*\] /, ""); line = $0 }
		line ~ /^\[ BUG: Invalid wait context \]/ { iwc++ }
		line ~ /^BUG: sleeping function called from invalid context/ { sia++ }
		line ~ /^BUG: scheduling while atomic/ { swa++ }
		line !~ /^(\[ BUG: Invalid wait context \]|BUG: sleeping function|BUG: scheduling while atomic)/ && line ~ /^(WARNING:|BUG:|\[ BUG:)/ {
			if (prev ~ /^========/) other++; else warn++
		}
		{ prev = line }
		END { printf "invalid_wait_context=%d sleeping_in_atomic=%d scheduling_while_atomic=%d lockdep_other=%d warning=%d\n", iwc, sia, swa, other, warn }'
}

phase_agreement() {
	module=""
	unattributed=$(counter unattributed)
	for k in $KINDS; do
		module="$module$k=$(counter "$k") "
	done
	module=${module% }
	log=$(log_report_counts)
	if [ "$module" = "$log" ] && [ "$unattributed" -eq 0 ]; then
		pass "detector agreement: counters equal the kernel log ($log)"
	else
		fail "detector agreement: counters '$module' (unattributed $unattributed), kernel log '$log'"
	fi
	sums=$(awk '{ for (i = 1; i <= NF; i++) { eq = index($i, "="); v[substr($i, 1, eq - 1)] += substr($i, eq + 1) } n++ }
		END { printf "invalid_wait_context=%d sleeping_in_atomic=%d scheduling_while_atomic=%d lockdep_other=%d warning=%d allocs_ok=%d allocs_failed=%d pages_freed=%d cells_run=%d ", v["invalid_wait_context"], v["sleeping_in_atomic"], v["scheduling_while_atomic"], v["lockdep_other"], v["warning"], v["allocated"], v["failed"], v["freed"], n }' "$DEBUGFS/results")
	snap=$(counters_snapshot)
	if [ "$sums" = "$snap" ]; then
		pass "counters equal the sums of the per-cell results ($(counter cells_run) cells)"
	else
		fail "counters '$snap' differ from per-cell sums '$sums'"
	fi
	# The full matrix of cells:all left nothing behind once its results
	# are cleared.
	if [ -f /tmp/free_before_matrix ]; then
		cells=$(counter cells_run)
		allocated=$(counter allocs_ok)
		freed=$(counter pages_freed)
		echo 1 >"$DEBUGFS/reset"
		check_no_leak "the full matrix ($cells cells)" "$(cat /tmp/free_before_matrix)" "$allocated" "$freed"
	fi
}

# -- robust ------------------------------------------------------------------

# The autorun parameters select rows by bit: the "tables" file numbers them.
# Selecting one context, one mask and one allocator must run exactly that
# cell at load time and log a summary.
check_autorun() {
	load_module
	ctx=$(awk '$1 == "context" && $3 == "process" { print $2 }' "$DEBUGFS/tables")
	mask=$(awk '$1 == "mask" && $3 == "GFP_ATOMIC" { print $2 }' "$DEBUGFS/tables")
	alloc=$(awk '$1 == "allocator" && $3 == "get_free_page" { print $2 }' "$DEBUGFS/tables")
	rmmod rust_gfp_nolocks
	if [ -z "$ctx" ] || [ -z "$mask" ] || [ -z "$alloc" ]; then
		fail "autorun: the tables file lacks process, GFP_ATOMIC or get_free_page"
		return
	fi
	insmod "$MODULE" autorun=1 controls=0 contexts=$((1 << ctx)) masks=$((1 << mask)) allocators=$((1 << alloc))
	cells=$(wc -l <"$DEBUGFS/results")
	spec=$(cut -d ' ' -f 2-4 "$DEBUGFS/results")
	summary=$(dmesg | grep 'rust_gfp_nolocks: ran 1 cells' | tail -n 1)
	if [ "$cells" -eq 1 ] && [ "$spec" = "ctx=process alloc=get_free_page gfp=GFP_ATOMIC" ] && [ -n "$summary" ]; then
		pass "autorun with contexts/masks/allocators bits: ran exactly '$spec' and logged a summary"
	else
		fail "autorun: $cells cells ('$spec'), summary '$summary'"
	fi
	rmmod rust_gfp_nolocks
}

# A blocking mask in an atomic section only reports while memory is ample;
# short of memory it would really sleep there. With about 40 MiB left (ramfs
# pages cannot be reclaimed), a GFP_KERNEL cell under raw_spin_lock that may
# take 32 MiB must be refused with ENOMEM, logged, and run nothing.
check_low_memory_refusal() {
	load_module
	fill_mb=$(($(meminfo_kb MemAvailable) / 1024 - 40))
	dd if=/dev/zero of=/tmp/fill bs=1M count="$fill_mb" 2>/dev/null
	cells_before=$(counter cells_run)
	spec="ctx=raw_spin_lock alloc=get_free_page gfp=GFP_KERNEL n=8192"
	err=$(write_spec "$spec" 2>&1)
	logged=$(dmesg | grep 'rust_gfp_nolocks: run: refusing' | tail -n 1)
	available_mb=$(($(meminfo_kb MemAvailable) / 1024))
	rm -f /tmp/fill
	case $err in
	*"out of memory"* | *"Cannot allocate memory"*)
		if [ -n "$logged" ] && [ "$(counter cells_run)" -eq "$cells_before" ]; then
			pass "low memory ($available_mb MiB available): '$spec' refused with ENOMEM, logged, nothing run"
		else
			fail "low memory: refused, but log '$logged', cells_run $cells_before -> $(counter cells_run)"
		fi
		;;
	*) fail "low memory ($available_mb MiB available): '$spec' was not refused ($err)" ;;
	esac
	rmmod rust_gfp_nolocks
}

# write_status SPEC FILE: writes SPEC to run, and the write's exit status to FILE.
write_status() {
	status=0
	write_spec "$1" 2>/dev/null || status=$?
	echo "$status" >"$2"
}

phase_robust() {
	load_module
	echo 1 >"$DEBUGFS/reset"
	spec_a="ctx=process alloc=get_free_page gfp=GFP_KERNEL"
	spec_b="ctx=spin_lock alloc=get_free_page gfp=GFP_ATOMIC"
	write_status "$spec_a" /tmp/writer_a &
	write_status "$spec_b" /tmp/writer_b &
	wait
	runs=$(wc -l <"$DEBUGFS/results")
	if [ "$(cat /tmp/writer_a)$(cat /tmp/writer_b)" = 00 ] && [ "$runs" -eq 2 ] && [ "$(counter cells_run)" -eq 2 ]; then
		pass "two writers at once: both runs complete, 2 results, cells_run=2"
	else
		fail "two writers at once: exit $(cat /tmp/writer_a)/$(cat /tmp/writer_b), $runs results, cells_run=$(counter cells_run)"
	fi

	write_status all /tmp/writer_all &
	writer=$!
	sleep 1
	if rmmod rust_gfp_nolocks && ! module_loaded; then
		wait "$writer"
		pass "rmmod during 'run all': module gone, writer ended (exit $(cat /tmp/writer_all))"
	else
		wait "$writer"
		fail "rmmod during 'run all' failed"
	fi

	check_autorun
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

main() {
	ktap_print_header
	for phase in "$@"; do
		echo "# phase $phase at $(cut -d ' ' -f 1 /proc/uptime), free pages $(free_pages)"
		case $phase in
		config) phase_config ;;
		load) phase_load ;;
		badinput) phase_badinput ;;
		cells:*) phase_cells "${phase#cells:}" 1 ;;
		matrix:*) phase_cells "${phase#matrix:}" 0 ;;
		agreement) phase_agreement ;;
		robust) phase_robust ;;
		*) ktap_exit_fail_msg "unknown phase '$phase'" ;;
		esac
	done
	echo "# phase end at $(cut -d ' ' -f 1 /proc/uptime)"
	ktap_set_plan $((KTAP_TESTNO - 1))
	ktap_print_totals
	[ "$KTAP_CNT_FAIL" -eq 0 ]
}

main "$@"
