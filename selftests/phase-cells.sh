# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phases cells, pagecheck and queue: cells run one by one and judged
# against expectations.txt and the kernel's page accounting, or announced
# for the host to run from restores.

# -- cells -------------------------------------------------------------------

# How far the kernel's own page accounting (pgalloc minus pgfree, the
# whole system) may move over one cell in which the module frees every
# page. Measured over the full matrix, the module reading the counters
# around the cell: 0 or +1 on both flavors (all 893 cells of a make matrix
# and of a make check's restores). Earlier code, with the shell reading
# /proc/vmstat around the write: -2 to +1 pages (lockdep), -3 to +5 (rt);
# before the cells reused vectors reserved at load and waited out the
# sleeping-report rate limit first (settle): -46 to +4. A leak moves it
# up: a cell that kept its pages gains 16 (one order-4 block) to 4096. A
# double free moves it down as much.
CELL_PAGES_MAX_GAIN=8
CELL_PAGES_MAX_LOSS=12
# A slab cell's pages are excused by the slabs' own count (kernel_slab),
# which lags: each CPU folds its pending delta into the global counter
# only past its stat_threshold (calculate_normal_threshold() in
# mm/vmstat.c: 8 for one CPU and 16 for two with about 1 GiB), so the
# global count can be off by up to twice that per CPU (from -t to +t).
# Seen: +9 pages over a new_slab cell whose slab count had not moved. A
# slab cell that kept all of its 4096 objects would keep 64 pages.
CELL_SLAB_LAG_PAGES=32
# How far the shell's /proc/vmstat figures around a cell's write (phase
# pagecheck) may exceed the module's, read around the cell inside it: the
# write and the markers around it. Measured once over the full matrix on
# both flavors (the shell's reads turned on in every chain): pgalloc and
# pgfree equal in 522 of 540 cells, the shell's pgalloc 1 higher in 18,
# pgfree never different.
CELL_PAGES_WINDOW_SLACK=4

# judge_cells: every cell run in this phase against the expectations and
# the kernel's page accounting (expect.awk), one KTAP line each; cells to
# run again in a fresh kernel are printed as "# RETRY SPEC", cells whose
# row lists outcomes the kernel's state decides between as
# "# STATE SPEC<tab>ALTERNATIVES".
judge_cells() {
	[ -s "$T/cells.results" ] || return 0
	awk -v flavor="$FLAVOR" -v max_gain="$CELL_PAGES_MAX_GAIN" -v max_loss="$CELL_PAGES_MAX_LOSS" -v slab_lag="$CELL_SLAB_LAG_PAGES" \
		-v window_slack="$CELL_PAGES_WINDOW_SLACK" -v derived="${DERIVED:-0}" \
		-f "$SELFTESTS/expect.awk" "$SELFTESTS/expectations.txt" "$T/cells.results" >"$T/verdicts" ||
		fail "judge: expect.awk failed"
	# One verdict per cell, or the judge itself is broken.
	cells=$(wc -l <"$T/cells.results")
	verdicts=$(wc -l <"$T/verdicts")
	[ "$cells" -eq "$verdicts" ] || fail "judge: $verdicts verdicts for $cells cells"
	tab=$(printf '\t')
	while IFS=$tab read -r status desc detail row spec alternatives; do
		[ "$row" = 0 ] || echo "# ROW $row"
		case $status in
		ok)
			pass "$desc"
			# The kernel's state decides between these outcomes
			# (expectations.txt's "|"): the reports say so.
			[ -z "$alternatives" ] || printf '# STATE %s\t%s\n' "$spec" "$alternatives"
			;;
		retry) echo "# RETRY $spec" ;;
		*)
			fail "$desc"
			echo "# $detail"
			;;
		esac
	done <"$T/verdicts"
	judge_derived
	awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^kernel_(alloc|free)=/) { split($i, kv, "="); v[kv[1]] = kv[2] }
		print "kernel pages +" v["kernel_alloc"] " -" v["kernel_free"] " net " v["kernel_alloc"] - v["kernel_free"] }' \
		"$T/cells.results" >>"$T/cells.pages"
}

# judge_derived: for every cell of this phase with a lock trace, the
# module's derived verdicts (from the locks it saw and the contexts' state)
# equal the kernel's own reports (derived.awk), one KTAP line each: where
# both exist, the derivation is proven, not assumed.
judge_derived() {
	awk -f "$SELFTESTS/derived.awk" "$T/cells.results" >"$T/derived" || fail "judge: derived.awk failed"
	tab=$(printf '\t')
	while IFS=$tab read -r status desc detail; do
		if [ "$status" = ok ]; then
			pass "$desc"
		else
			fail "$desc"
			echo "# $detail"
		fi
	done <"$T/derived"
}

# phase_cells SOURCE: SOURCE is "all", "all:K/N" or a file of specs.
# The rows a kernel may lack (expected_cases says when): a spec of one of
# them that this kernel has no row for is skipped; any other name goes to
# the module, which refuses a typo. A list of its own: the module's tables
# name only the rows this kernel has, so they cannot tell a row this
# kernel lacks from a typo.
OPTIONAL_ROWS="alloc_pages_nolock kmalloc_nolock kfree_nolock kfree_rcu_nolock kmalloc kfree kfree_rcu kvfree_rcu_mightsleep"

# spec_file FILE: the specs of FILE this kernel runs: comments and blank
# lines dropped, a line "FLAVOR: SPEC" kept for that flavor only (a path
# one flavor lacks), and a spec of an optional row this kernel lacks
# dropped (kfree_rcu_nolock before 7.3: phase cases checks, independently,
# which rows the kernel should have).
spec_file() {
	awk -v flavor="$FLAVOR" -v cases="$DEBUGFS/cases" -v optional="$OPTIONAL_ROWS" '
		BEGIN {
			while ((getline line < cases) > 0)
				if (match(line, /alloc=[^ ]+/))
					row[substr(line, RSTART + 6, RLENGTH - 6)] = 1
			n = split(optional, names, " ")
			for (i = 1; i <= n; i++)
				if (!(names[i] in row))
					lacks[names[i]] = 1
		}
		/^[ \t]*(#|$)/ { next }
		/^[a-z]+: / {
			if ($1 != flavor ":")
				next
			sub(/^[a-z]+: /, "")
		}
		match($0, /alloc=[^ ]+/) && (substr($0, RSTART + 6, RLENGTH - 6) in lacks) { next }
		{ print }
	' "$1"
}

phase_cells() {
	if ! load_module; then
		fail "cells $1: the module does not load"
		return
	fi
	full=1
	case $1 in
	all) cat "$DEBUGFS/cases" >/tmp/specs ;;
	all:*/*)
		part=${1#all:}
		awk -v k="${part%/*}" -v n="${part#*/}" '(NR - 1) % n == k' "$DEBUGFS/cases" >/tmp/specs
		;;
	*)
		spec_file "$1" >/tmp/specs
		full=0
		# Cells of a file are cases too (those of the cases file are
		# listed by phase cases).
		sed 's/^/# CASE /' /tmp/specs
		;;
	esac
	if ! [ -s /tmp/specs ]; then
		fail "cells $1: no cell to run"
		return
	fi
	: >"$T/cells.results"
	# Cells after lockdep disarms are run again in a fresh kernel, so
	# running them now is wasted, except for cells:all, which the tests
	# need as one matrix in one boot (free pages, detector totals).
	stop_on_disarm=$((1 - full))
	[ "$stop_on_disarm" -eq 1 ] || settled_free_pages >/tmp/free_before_matrix
	# The processes this boot ran so far (insmod, the awk and sed above)
	# give their stacks and page tables back through RCU after they
	# exited: let that happen before the first cell's window, not inside
	# a later one. Seen without: a fresh boot's 8th cell counted 33 frees
	# it did not make ("pages freed twice?"). The cells themselves fork
	# nothing (builtins only), so once is enough.
	pages_quiet
	stopped=0
	while IFS= read -r spec; do
		[ -n "$spec" ] || continue
		if [ "$stopped" -eq 1 ]; then
			echo "# RETRY $spec"
			continue
		fi
		run_cell "$spec"
		[ "$stop_on_disarm" -eq 1 ] || continue
		read -r armed <"$DEBUGFS/lockdep"
		[ "$armed" = armed ] || stopped=1
	done </tmp/specs
	judge_cells
	check_log_agreement
}

# phase_queue SOURCE: every cell of SOURCE waits for the host's restores.
phase_queue() {
	case $1 in
	all) cat "$DEBUGFS/cases" ;;
	*) spec_file "$1" ;;
	esac >"$T/queue"
	sed 's/^/# CASE /' "$T/queue"
	sed 's/^/# RETRY /' "$T/queue"
}
