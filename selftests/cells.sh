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
# 1 in chain: run_cell prints its raw line for the host's judge (which
# rebuilds cells.results from them) instead of keeping it in a file.
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

# pages_quiet: waits, at most about 4 s, until the kernel's page counters
# have stood still (one page of slack: the reads themselves) for two tenths
# of a second in a row, before phase pagecheck opens the shell's window:
# pages that earlier processes left to RCU or to workers (an exited task's
# stack and page tables) are then freed before the window, not inside it.
# Seen without it: a cell's window right after phase cases held 26 such
# frees. The wait is a builtin read with a timeout on a FIFO nobody writes.
# Leaves VM_ALLOC, VM_FREE and VM_SLAB from its last read, which opens the
# window.
pages_quiet() {
	[ -p "$T/quiet.fifo" ] || mkfifo "$T/quiet.fifo"
	_quiet=0
	_tries=0
	vmstat_pages
	while [ "$_quiet" -lt 2 ] && [ "$_tries" -lt 30 ]; do
		_alloc=$VM_ALLOC _free=$VM_FREE
		# shellcheck disable=SC3045 # busybox sh's read has -t
		read -r -t 0.1 _ <>"$T/quiet.fifo" || true
		vmstat_pages
		if [ $((VM_ALLOC - _alloc)) -le 1 ] && [ $((VM_FREE - _free)) -le 1 ]; then
			_quiet=$((_quiet + 1))
		else
			_quiet=0
		fi
		_tries=$((_tries + 1))
	done
	[ "$_quiet" -ge 2 ] || echo "# pages still moving after $_tries tenths of a second: the window opens anyway"
}

# wait_exited PID...: waits, at most about 5 s, until each PID has exited
# (gone, or a zombie: its memory is freed at exit, before it waits to be
# reaped). For a test that kills a guest process and must not count the
# pages it frees inside a cell's window; a command run by the saved guest
# runs in a subshell, where "wait" knows no such child.
wait_exited() {
	[ -p "$T/quiet.fifo" ] || mkfifo "$T/quiet.fifo"
	_tries=0
	for _pid in "$@"; do
		while [ -e "/proc/$_pid" ] && [ "$_tries" -lt 100 ]; do
			read -r _ _ _state _ <"/proc/$_pid/stat" 2>/dev/null || break
			[ "$_state" != Z ] || break
			# shellcheck disable=SC3045 # busybox sh's read has -t
			read -r -t 0.05 _ <>"$T/quiet.fifo" || true
			_tries=$((_tries + 1))
		done
	done
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
		pages_quiet
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
	if [ "$RAW_CELLS" -eq 1 ]; then
		echo "# CELL $_raw"
	else
		echo "$_raw" >>"$T/cells.results"
	fi
	echo "# RESULT $RESULT_LINE"
}

# klog_wait: waits for the kernel log reader's answer on its FIFO
# (scripts/guest-init, klog.awk), which the saved guest keeps open
# read-write on fd 4: "done" once it printed everything up to its last
# marker, "end" once its cat ended (what it printed may stop short). Fails
# unless "done". Held open, the FIFO neither makes the reader's open wait
# nor loses an answer between two reads: a read that the SIGCHLD of the
# reader's SIGCONT interrupts (busybox sh sets no SA_RESTART) is just tried
# again, and a dead reader costs the timeouts, not a hang.
klog_wait() {
	_tries=0
	while [ "$_tries" -lt 4 ]; do
		# shellcheck disable=SC3045 # busybox sh's read has -t
		if read -r -t 2 _answer <&4; then
			[ "$_answer" = "done" ]
			return
		fi
		_tries=$((_tries + 1))
	done
	echo "# the kernel log reader did not answer"
	return 1
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
	RAW_CELLS=0
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
	if [ -n "${KLOG_READER:-}" ]; then
		echo "rgn: log reader flush" >/dev/kmsg
		# A reader killed earlier may be reaped already: no such process.
		kill -CONT "$KLOG_READER" 2>/dev/null
		klog_wait && return
		# Its cat ended (a read error, or killed) or it did not answer:
		# what it printed may stop short, and a slow one must not print
		# after dmesg. The judge reads the log after the last RGN-DMESG.
		kill -KILL "$KLOG_READER" "$KLOG_FILTER" 2>/dev/null
		echo "RGN-DMESG"
	fi
	echo "# kernel log from dmesg (no log reader)"
	dmesg | grep -B 1 -E 'rgn: cell [0-9]+ (begin|end)$|\] (\[ )?BUG:|\] WARNING:' || true
}
