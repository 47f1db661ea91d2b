#!/bin/sh
# shellcheck shell=dash
# SPDX-License-Identifier: GPL-2.0
#
# The cell runner of the test guest, sourced by run.sh and, before the VM is
# saved, by the guest's /init (scripts/guest-init): a restore then calls
# chain with no script left to read or parse, which under TCG, with the
# translation cache empty after each restore, costs more than the cells.
# Defines functions and a few variables only.

DEBUGFS=/sys/kernel/debug/rust_gfp_nolocks
# Scratch files: /tmp in the guest; the host's judge gives each run its own.
T=${RGN_TMP:-/tmp}
CELL_NO=0
# 1 in chain: run_cell prints its raw line for the host's judge.
RAW_CELLS=0

# fail DESCRIPTION: run.sh's KTAP failure; a chain's own, numbered 0 (the
# host's judge renumbers it), where run.sh did not define one.
command -v fail >/dev/null 2>&1 || fail() { echo "not ok 0 $FLAVOR: $*"; }

# 1 (phase pagecheck): run_cell also reads the kernel's page counters
# around the write, for the judge to hold the module's own figures against.
SHELL_PAGES=0

# vmstat_pages: sets VM_ALLOC and VM_FREE, the kernel's own page counts
# since boot (/proc/vmstat pgalloc_* summed, pgfree), read with shell
# builtins only (no fork: a fork allocates pages; the kernel's kmalloc()
# of the read buffer comes from a slab).
# VM_SLAB: pages in slabs now (nr_slab_reclaimable and _unreclaimable,
# which /proc/vmstat prints in pages), for the slab rows: the caches keep
# empty slabs and sheaves. The file is read a byte at a time (a builtin):
# it stops at pgfree, which follows the others (vmstat_text[] in
# mm/vmstat.c), a quarter of the file before its end. Each line costs the
# kernel a pass over every counter: a call costs about 30 ms under TCG,
# which is why the module reads the same counters around each cell itself.
vmstat_pages() {
	VM_ALLOC=0
	VM_FREE=0
	VM_SLAB=0
	while read -r _key _value; do
		case $_key in
		pgalloc_*) VM_ALLOC=$((VM_ALLOC + _value)) ;;
		pgfree)
			VM_FREE=$_value
			break
			;;
		nr_slab_reclaimable | nr_slab_unreclaimable) VM_SLAB=$((VM_SLAB + _value)) ;;
		esac
	done </proc/vmstat
}

# write_spec SPEC: one write of SPEC to run; a refusal is reported on stderr
# (echo, not printf: busybox's printf does not report a failed write).
write_spec() { echo "$1" >"$DEBUGFS/run"; }

# run_cell SPEC: runs one cell between two kernel log markers and prints
# its results line for the host, with the kernel's page counters' change
# over the cell, which the module reads around it. Builtins only (a fork
# costs tens of ms under TCG, and allocates pages inside the shell's
# window): judge_cells judges all cells of the phase at once.
run_cell() {
	CELL_NO=$((CELL_NO + 1))
	RESULT_LINE=""
	# The wait for __might_resched()'s rate limit (after a sleeping report)
	# happens here, before the counters are read: what the kernel does
	# meanwhile (deferred frees, a new worker) is not the cell's.
	echo 1 >"$DEBUGFS/settle" 2>/dev/null || true
	if [ "$SHELL_PAGES" -eq 1 ]; then
		vmstat_pages
		alloc0=$VM_ALLOC free0=$VM_FREE slab0=$VM_SLAB
	fi
	echo "rgn: cell $CELL_NO begin" >/dev/kmsg
	status=0
	write_spec "$1" 2>/tmp/err || status=$?
	echo "rgn: cell $CELL_NO end" >/dev/kmsg
	_shell=""
	if [ "$SHELL_PAGES" -eq 1 ]; then
		vmstat_pages
		_shell=" shell_alloc=$((VM_ALLOC - alloc0)) shell_free=$((VM_FREE - free0)) shell_slab=$((VM_SLAB - slab0))"
	fi
	if [ "$status" -ne 0 ]; then
		read -r err </tmp/err
		fail "cell $1: the module refused it ($err)"
		return
	fi
	read -r RESULT_LINE <"$DEBUGFS/last"
	_raw="cell=$CELL_NO$_shell $RESULT_LINE"
	echo "$_raw" >>"$T/cells.results"
	[ "$RAW_CELLS" -eq 0 ] || echo "# CELL $_raw"
	echo "# RESULT $RESULT_LINE"
}

# klog_wait: waits for the kernel log reader (scripts/guest-init,
# klog.awk) to print everything up to its last marker (or its end, if its
# cat died). The shell's open of the FIFO fails with EINTR when the
# SIGCHLD of the reader's SIGCONT arrives meanwhile (busybox sh sets no
# SA_RESTART): open it again.
klog_wait() {
	_tries=0
	until read -r _ 2>/dev/null </tmp/klog.done; do
		_tries=$((_tries + 1))
		if [ "$_tries" -ge 8 ]; then
			echo "# the kernel log reader did not answer"
			return 1
		fi
	done
}

# klog_reader_alive: the reader's cat and awk both still exist (not
# exited, not zombies): a dead one would leave klog_wait waiting forever.
klog_reader_alive() {
	for _pid in "$KLOG_READER" "$KLOG_FILTER"; do
		_state=Z
		read -r _ _ _state _ 2>/dev/null </proc/"$_pid"/stat || return 1
		[ "$_state" != Z ] || return 1
	done
}

# chain SPEC...: (in a restore of the saved state) the cells in order,
# until one disarms lockdep; the rest are printed as "# RETRY SPEC". A
# sleeping report does not end the chain: the next cell waits out
# __might_resched()'s once-per-HZ limit (settle), idle, which costs less
# CPU than a restore (measured: make matrix 115 s against 135 s). Prints each
# cell's raw results ("# CELL") and then the kernel log since the restore
# (the saved guest cleared it), for run.sh's phase judge on the host.
chain() {
	RAW_CELLS=1
	: >"$T/cells.results"
	read -r _up _ </proc/uptime
	echo "# phase chain at $_up"
	for _spec in "$@"; do echo "# CASE $_spec"; done
	_stopped=0
	for _spec in "$@"; do
		if [ "$_stopped" -eq 1 ]; then
			echo "# RETRY $_spec"
			continue
		fi
		run_cell "$_spec"
		read -r _armed <"$DEBUGFS/lockdep"
		[ "$_armed" = armed ] || _stopped=1
	done
	read -r _up _ </proc/uptime
	echo "# chain end at $_up"
	# The clock the cells' timings used: the saved guest's TSC, unless
	# the clocksource watchdog took a restore's clock jump for TSC skew.
	read -r _cs </sys/devices/system/clocksource/clocksource0/current_clocksource
	echo "# CLOCKSOURCE $_cs"
	echo "RGN-DMESG"
	# Only what the host's judge reads (cell markers, report headers and
	# the line before each): the whole log would cost more serial output
	# than the cells. The saved guest's reader (scripts/guest-init,
	# klog.awk) prints them with no fork.
	if [ -n "${KLOG_READER:-}" ] && klog_reader_alive; then
		echo "rgn: log reader flush" >/dev/kmsg
		kill -CONT "$KLOG_READER"
		klog_wait
		# Its cat died on the way (a read error): what it printed may stop
		# short. The judge reads the log after the last RGN-DMESG.
		klog_reader_alive && return
		echo "RGN-DMESG"
	fi
	echo "# kernel log from dmesg (no log reader)"
	dmesg | grep -B 1 -E 'rgn: cell [0-9]+ (begin|end)$|\] (\[ )?BUG:|\] WARNING:' || true
}
