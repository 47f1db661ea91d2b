# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phase judge: on the host, a restore chain's output judged as phase
# cells would have judged it in the guest, with the kernel log's counts.

# phase_judge RAW: on the host, the verdicts the guest would have printed
# for the output RAW of chain (cells.sh): its own lines first, then the judge's.
phase_judge() {
	sed -n '/^RGN-DMESG$/q; /^# \(CASE\|RESULT\|RETRY\) /p' "$1"
	# A test the guest failed (a refused cell) fails here too.
	sed -n '/^RGN-DMESG$/q; s/^not ok [0-9]* //p' "$1" >"$T/guest.failed"
	while IFS= read -r _failed; do
		ktap_test_fail "$_failed"
	done <"$T/guest.failed"
	sed -n '/^RGN-DMESG$/q; s/^# CELL //p' "$1" >"$T/cells.results"
	# The log after the last RGN-DMESG (a chain whose log reader died
	# prints dmesg's after what the reader printed).
	awk '/^RGN-DMESG$/ { n = 0; next } { line[++n] = $0 } END { for (i = 1; i <= n; i++) print line[i] }' "$1" >"$T/dmesg"
	if ! grep -q '^RGN-DMESG$' "$1"; then
		fail "judge: the guest output stops before the kernel log"
		return
	fi
	judge_cells
	KMSG_READ=1 check_log_agreement
	# The restore kept the TSC (scripts/vm boots with tsc=reliable): the
	# HPET, after a watchdog switch, makes every timing an emulated MMIO
	# read.
	clock=$(sed -n '/^RGN-DMESG$/q; s/^# CLOCKSOURCE //p' "$1")
	if [ "$clock" = tsc ]; then
		pass "clocksource still tsc at the end of the chain"
	else
		fail "clocksource at the end of the chain: '$clock', not tsc (the watchdog switched?)"
	fi
}

# check_log_agreement: for every cell run in this boot, the report headers
# the kernel log holds between the cell's markers, counted by the module's
# rules but from dmesg after the fact, equal the cell's own counts (plus the
# reports the module saw from others during that cell: interrupts, other
# tasks). A report counted to the wrong cell fails here. With KMSG_READ
# set, the kernel log is already in "$T/dmesg" (phase judge).
check_log_agreement() {
	[ -s "$T/cells.results" ] || return 0
	[ -n "${KMSG_READ:-}" ] || dmesg >"$T/dmesg"
	verdict=$(awk -v mode=cells -f "$SELFTESTS/log-headers.awk" "$T/cells.results" "$T/dmesg")
	cells=$(printf '%s' "$verdict" | cut -f 2)
	if [ "$(printf '%s' "$verdict" | cut -f 1)" = ok ]; then
		pass "detector agrees with the kernel log cell by cell ($cells cells, report headers between each cell's markers)"
	else
		fail "detector and kernel log disagree:$(printf '%s' "$verdict" | cut -f 3)"
	fi
	: >"$T/cells.results"
}
