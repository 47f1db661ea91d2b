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
#   cases       the cases file lists exactly the cells this kernel's config
#               and symbols call for
#   cells:all   every cell of the cases file against expectations.txt, each
#               with the kernel's own page accounting (which the module reads
#               around the cell) and, at the end, the kernel log's report
#               headers compared cell by cell
#   cells:all:K/N
#               the same for every N-th cell of the cases file from the K-th
#               (K from 0): N boots share the matrix
#   cells:FILE  the cells listed in FILE (one spec a line), stopping after the
#               first cell that disarms lockdep (the rest wait for a new boot)
#   pagecheck:SOURCE
#               cells:SOURCE, with /proc/vmstat also read by the shell
#               around each cell: the module's page figures must lie inside
#               the shell's, within CELL_PAGES_WINDOW_SLACK
#   queue:SOURCE
#               the cells of SOURCE ("all" or a file of specs) announced
#               ("# CASE") and left for the host to run from restores
#               ("# RETRY")
#   onepass     every cell in one load (one write of 'all', no wait for the
#               sleep check's rate limit); cases and results printed as one
#               compressed block ("# ONEPASS-GZ") for the host
#   judge-onepass:RAW
#               (on the host, as judge:RAW) judges onepass's decoded block
#               RAW: on the kernel's reports where it printed them and on
#               the module's derived verdicts elsewhere; cells that need
#               lockdep itself wait ("# RETRY")
#   judge:RAW   (on the host, with busybox sh, RGN_FLAVOR, RGN_KTAP_HELPERS
#               and RGN_TMP) judges the output RAW of phase chain as phase
#               cells would have in the guest
#   agreement   the module's totals equal an independent count of the kernel
#               log; no page leaked around cells:all (settled free pages)
#   robust      concurrent writers, rmmod during a run, selections by name
#               ("all KEY=VALUE..."), refusals, and 50 insmod/rmmod cycles
#               that leave no memory behind
#   autorun     (a fresh boot) the run-all summary counts as unchecked only
#               the cells that started with lockdep already off; autorun=1
#               runs every case at load time
# Cells that lockdep could not check are printed as "# RETRY <spec>" for the
# host to run again in a fresh boot.
set -u
case ${1:-} in
-h | --help)
	sed -n '3,/^set -u$/{/^set -u$/d; s/^# \{0,1\}//; p}' "$0"
	exit 0
	;;
esac

SELFTESTS=$(dirname "$0")
# The kernel tree's helpers, copied into the guest by scripts/vm (the host
# names them for phase judge).
# shellcheck source=/dev/null
. "${RGN_KTAP_HELPERS:-$SELFTESTS/ktap_helpers.sh}"
# The shared library, then one file per phase (or group of phases).
# shellcheck source=selftests/lib.sh
. "$SELFTESTS/lib.sh"
for _phase_file in "$SELFTESTS"/phase-*.sh; do
	# shellcheck source=/dev/null
	. "$_phase_file"
done

main() {
	ktap_print_header
	for phase in "$@"; do
		case $phase in
		judge:* | judge-onepass:*) echo "# phase $phase (on the host)" ;;
		*) echo "# phase $phase at $(cut -d ' ' -f 1 /proc/uptime), free pages $(free_pages)" ;;
		esac
		case $phase in
		config) phase_config ;;
		load) phase_load ;;
		badinput) phase_badinput ;;
		cases) phase_cases ;;
		cells:*) phase_cells "${phase#cells:}" ;;
		pagecheck:*)
			SHELL_PAGES=1
			phase_cells "${phase#pagecheck:}"
			SHELL_PAGES=0
			;;
		judge:*) phase_judge "${phase#judge:}" ;;
		judge-onepass:*) phase_judge_onepass "${phase#judge-onepass:}" ;;
		queue:*) phase_queue "${phase#queue:}" ;;
		onepass) phase_onepass ;;
		agreement) phase_agreement ;;
		robust) phase_robust ;;
		autorun) phase_autorun ;;
		*) ktap_exit_fail_msg "unknown phase '$phase'" ;;
		esac
	done
	echo "# phase end at $(cut -d ' ' -f 1 /proc/uptime)${RGN_KTAP_HELPERS:+ (host)}"
	ktap_set_plan $((KTAP_TESTNO - 1))
	ktap_print_totals
	[ "$KTAP_CNT_FAIL" -eq 0 ]
}

main "$@"
