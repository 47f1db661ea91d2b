# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phases onepass and judge-onepass: every cell in one load, and its
# judging on the host.

# phase_onepass: every case in one write of 'all' to run, in one load,
# with no wait for the sleep check's once-per-second limit between cells:
# the kernel's own reports answer where it printed them (until lockdep's
# first report turns it off), the module's derived verdicts elsewhere.
# Prints the cases and the results as one compressed block for the host,
# whose phase judge-onepass judges them (expect.awk with derived=1, and
# derived.awk): judging 247 cells with busybox awk under TCG, and printing
# their verdicts through a PREEMPT_RT serial port (its interrupt handler
# runs in a thread: about 8 KB/s), cost more than the cells. A cell that
# needs lockdep itself is a "# RETRY SPEC" of the judge, for the host's
# restores, which also confirm every derived verdict (rgn-report confirm).
phase_onepass() {
	if ! load_module; then
		fail "onepass: the module does not load"
		return
	fi
	echo 1 >"$DEBUGFS/reset"
	echo 0 >"$DEBUGFS/sleep_check_wait"
	read -r _t0 _ </proc/uptime
	status=0
	write_spec all 2>/tmp/err || status=$?
	read -r _t1 _ </proc/uptime
	echo 1 >"$DEBUGFS/sleep_check_wait"
	if [ "$status" -ne 0 ]; then
		read -r err </tmp/err
		fail "onepass: the module refused 'all' ($err)"
		return
	fi
	echo "# onepass: $(wc -l <"$DEBUGFS/results") cells in one write, $_t0 s to $_t1 s of uptime"
	# The lines phase judge-onepass reads, gzip and base64: the host's
	# run-flavor decodes the block ("# ONEPASS-GZ LINES" to "# ONEPASS-GZ
	# end") into a file of its own.
	{
		sed 's/^/# CASE /' "$DEBUGFS/cases"
		sed 's/^/# CONTEXT /' "$DEBUGFS/contexts"
		awk '{ print "# CELL cell=" NR " " $0 }' "$DEBUGFS/results"
	} >"$T/onepass.raw"
	echo "# ONEPASS-GZ $(wc -l <"$T/onepass.raw")"
	gzip -c "$T/onepass.raw" | base64
	echo "# ONEPASS-GZ end"
	pass "onepass: every case ran in one write of 'all'"
}

# phase_judge_onepass RAW: on the host, the verdicts of phase onepass's
# decoded block RAW: its cases, contexts (seen from inside, for the
# host's view) and results, each cell judged on the
# kernel's reports where it printed them and on the derived verdicts
# elsewhere, and the derived verdicts held against the kernel's reports
# wherever both exist.
phase_judge_onepass() {
	grep '^# CASE \|^# CONTEXT ' "$1"
	sed -n 's/^# CELL cell=[0-9]* /# RESULT /p' "$1"
	sed -n 's/^# CELL //p' "$1" >"$T/cells.results"
	cases=$(grep -c '^# CASE ' "$1")
	cells=$(wc -l <"$T/cells.results")
	if [ "$cases" -eq "$cells" ]; then
		pass "onepass: $cells results for $cases cases"
	else
		fail "onepass: $cells results for $cases cases"
	fi
	# No per-cell page check: the cells of one write run back to back,
	# without the quiet wait its noise was measured with (the global slab
	# counters lag a cell's slabs into the next one's window); the phases
	# that wait (cells, pagecheck, the restores' chains) check the pages.
	_max_gain=$CELL_PAGES_MAX_GAIN
	CELL_PAGES_MAX_GAIN=""
	DERIVED=1 judge_cells
	CELL_PAGES_MAX_GAIN=$_max_gain
}
