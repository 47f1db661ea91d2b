# SPDX-License-Identifier: GPL-2.0
#
# Counts kernel report headers in the kernel log (dmesg), by the rules the
# module's detector uses, but after the fact and from the log: the
# independent count the detector is compared with.
#
# usage:
#   awk -v mode=totals -f log-headers.awk DMESG
#       "KIND=N ..." for every report kind since the last "rgn: module loaded"
#   awk -v mode=cells -f log-headers.awk CELLS DMESG
#       CELLS: lines "cell=N key=value..." (a results line per cell run
#       between "rgn: cell N begin" and "rgn: cell N end" in the log).
#       Prints "ok|not_ok<TAB>cells<TAB>problems": each cell's counts equal
#       the headers between its markers (with reports from others in the
#       window, unattributed=U: at least the cell's per kind, and in all
#       exactly the cell's plus U).

# Its own list of kinds and its own classifier, on purpose: a count that
# learnt from the module what a report is would agree with the module's
# mistakes (the module publishes its kinds in tables; phase agreement
# checks that both lists name the same kinds).
BEGIN {
	nk = split("invalid_wait_context sleeping_in_atomic scheduling_while_atomic lockdep_other warning", kind, " ")
}

# report_kind LINE PREV: the kind of report whose header LINE is ("" if
# none); PREV is the line before (lockdep prints "=====" before a header).
function report_kind(line, prev) {
	if (line ~ /^\[ BUG: Invalid wait context \]/) return "invalid_wait_context"
	if (line ~ /^BUG: sleeping function called from invalid context/) return "sleeping_in_atomic"
	if (line ~ /^BUG: scheduling while atomic/) return "scheduling_while_atomic"
	if (line ~ /^(WARNING:|BUG:|\[ BUG:)/) return (prev ~ /^========/) ? "lockdep_other" : "warning"
	return ""
}

mode == "cells" && FNR == NR {
	n = substr($1, 6)
	order[++cells] = n
	for (i = 2; i <= NF; i++) {
		eq = index($i, "=")
		v[n "," substr($i, 1, eq - 1)] = substr($i, eq + 1)
	}
	next
}

{ sub(/^\[[ 0-9.]*\] /, ""); line = $0 }

mode == "totals" && line ~ /rgn: module loaded/ { on = 1; delete total; prev = line; next }
line ~ /^rgn: cell [0-9]+ begin$/ { split(line, w, " "); cur = w[3]; seen[cur] = 1; prev = line; next }
line ~ /^rgn: cell [0-9]+ end$/ { cur = ""; prev = line; next }

{
	k = report_kind(line, prev)
	if (k != "") {
		total[k]++
		if (cur != "")
			log_count[cur "," k]++
	}
	prev = line
}

END {
	if (mode == "totals") {
		out = ""
		for (i = 1; i <= nk; i++)
			out = out (i > 1 ? " " : "") kind[i] "=" (on ? total[kind[i]] + 0 : 0)
		print out
		exit
	}
	bad = ""
	for (c = 1; c <= cells; c++) {
		n = order[c]
		name = (v[n ",kind"] == "control") ? "control=" v[n ",control"] : v[n ",ctx"] "/" v[n ",alloc"] "/" v[n ",gfp"] "/" v[n ",path"]
		if (!(n in seen)) { bad = bad " cell " n " (" name "): no marker in the log;"; continue }
		msum = 0; lsum = 0; diff = ""; short = 0
		for (i = 1; i <= nk; i++) {
			m = v[n "," kind[i]] + 0; l = log_count[n "," kind[i]] + 0
			msum += m; lsum += l
			if (m != l) diff = diff " " kind[i] " module " m " log " l
			if (l < m) short = 1
		}
		u = v[n ",unattributed"] + 0
		if ((u == 0 && diff != "") || (u > 0 && (short || lsum != msum + u)))
			bad = bad " cell " n " (" name "):" diff " unattributed " u ";"
	}
	printf "%s\t%d\t%s\n", (bad == "" ? "ok" : "not_ok"), cells, bad
}
