# SPDX-License-Identifier: GPL-2.0
#
# Checks rust_gfp_nolocks results lines against expectations.txt.
# usage: awk -v flavor=F [-v max_gain=P -v max_loss=P -v window_slack=P -v slab_lag=P] [-v derived=1] -f expect.awk expectations.txt RESULTS
# Columns of expectations.txt: flavor context allocator gfp path expect reason.
# RESULTS: one results line per line (anything before "kind=" may add
# key=value fields: kernel_alloc= and kernel_free=, the kernel's page
# counts over the cell, are checked against max_gain and max_loss;
# kernel_slab=, the change of the pages in slabs (nr_slab_reclaimable and
# nr_slab_unreclaimable), excuses what slab rows' caches kept;
# shell_alloc= and shell_free= (phase pagecheck), the same counters read by
# the shell around the write, must hold the module's within window_slack).
# Prints one line per results line:
#   "ok|not_ok|retry<TAB>description<TAB>detail<TAB>row<TAB>spec"
# retry: the cell must run again in a fresh kernel, unjudged: a path=pcp
# cell that left the CPU whose list it filled, or that woke kswapd (another
# lock than the per-cpu path under test); a cell the module marked
# unsettled= (path=slowpath without its state, or a spent allocation
# failure warning); or a cell that started with lockdep disarmed, when all
# else it could check agreed.
# derived=1 (one load runs every cell; phase onepass): a cell with a lock
# trace is judged where the kernel could not report by the module's
# derived verdicts instead: invalid_wait_context once lockdep is off,
# sleeping_in_atomic when the sleep check's rate limit was running
# (sleep_check_open=0), and lock= by the first derived verdict. A cell
# lockdep no longer checked whose row expects lockdep_other (a report only
# lockdep itself gives) is a retry.
# row: the number of the expectation row that matched (comments and blank
# lines not counted), so the host can tell rows that match no cell; 0: none.
# spec: the cell's spec, to run it again.
# The report kinds are the module's: each results line names them
# (kinds=NAME:SYMBOL,...), and the expectation rows' tokens are checked
# against them at the first line (validate_rows). Lockdep's own kinds are
# this judge's knowledge of what lockdep prints.
BEGIN {
	is_lockdep["invalid_wait_context"] = 1
	is_lockdep["lockdep_other"] = 1
}

# read_kinds(list): kinds[1..nkinds] and is_kind from a line's kinds=.
function read_kinds(list,    i, pair, kv) {
	delete is_kind
	nkinds = split(list, pair, ",")
	for (i = 1; i <= nkinds; i++) {
		split(pair[i], kv, ":")
		kinds[i] = kv[1]
		is_kind[kv[1]] = 1
	}
}

# validate_rows(): a token the judge does not know would check nothing:
# refuse the file (once the kinds are known).
function validate_rows(    r, ntok, tok, t) {
	for (r = 1; r <= rows; r++) {
		ntok = split(rexpect[r], tok, /[,|]/)
		for (t = 1; t <= ntok; t++) {
			if (tok[t] == "clean" || tok[t] == "alloc_fails" || tok[t] in is_kind)
				continue
			if (tok[t] == "kswapd" && rpath[r] == "slowpath")
				continue
			if (tok[t] ~ /^[a-z_]+=[0-9]+$/ && (substr(tok[t], 1, index(tok[t], "=") - 1) in is_kind || tok[t] ~ /^unattributed=/))
				continue
			if (tok[t] ~ /^lock=[^ ]+$/ || tok[t] ~ /^observed_path=[a-z_]+$/)
				continue
			printf "expect.awk: expectations.txt row %d: unknown or misplaced token '%s' (kswapd only on path slowpath)\n", r, tok[t] > "/dev/stderr"
			exit 2
		}
	}
}

# A pattern is "*", a value, or values separated by commas.
function match_field(pattern, value) { return pattern == "*" || index("," pattern ",", "," value ",") > 0 }

FNR == NR {
	if ($0 ~ /^[ \t]*(#|$)/)
		next
	rows++
	rflavor[rows] = $1; rctx[rows] = $2; ralloc[rows] = $3; rgfp[rows] = $4; rpath[rows] = $5; rexpect[rows] = $6
	reason = $0
	for (i = 1; i <= 6; i++)
		sub(/^[ \t]*[^ \t]+/, "", reason)
	sub(/^[ \t]+/, "", reason)
	rreason[rows] = reason
	next
}

/kind=/ {
	delete obs
	for (i = 1; i <= NF; i++) {
		eq = index($i, "=")
		if (eq)
			obs[substr($i, 1, eq - 1)] = substr($i, eq + 1)
	}
	if (obs["kind"] == "control") {
		ctx = "control"; alloc = obs["control"]; gfp = "-"; path = "-"
		name = "control=" obs["control"]
		spec = name
	} else {
		ctx = obs["ctx"]; alloc = obs["alloc"]; gfp = obs["gfp"]; path = obs["path"]
		name = ctx "/" alloc "/" gfp "/" obs["path"]
		spec = "ctx=" ctx " alloc=" alloc " gfp=" gfp " order=" obs["order"] " path=" path " n=" obs["n"]
	}
	if (!("kinds" in obs)) {
		printf "not_ok\t%s: the results line names no report kinds (kinds=): a module older than this judge?\t%s\t0\t%s\n", name, $0, spec
		next
	}
	if (obs["kinds"] != kinds_seen) {
		read_kinds(obs["kinds"])
		kinds_seen = obs["kinds"]
		validate_rows()
	}
	row = 0
	for (r = 1; r <= rows && !row; r++)
		if (match_field(rflavor[r], flavor) && match_field(rctx[r], ctx) &&
		    match_field(ralloc[r], alloc) && match_field(rgfp[r], gfp) && match_field(rpath[r], path))
			row = r
	if (!row) {
		printf "not_ok\t%s: no expectation row matches\t%s\t0\t%s\n", name, $0, spec
		next
	}
	check(row)
}

# pages_problem: the kernel counted at least the pages the cell says it
# allocated, and got back what was allocated during the cell, within the
# measured noise; "" if so.
function pages_problem(    mine, net, i, kept, slab_kept, gain) {
	if (!("kernel_alloc" in obs) || max_gain == "")
		return ""
	# busybox awk has no ^ operator (no math support).
	mine = obs["allocated"]
	for (i = 0; i < obs["order"]; i++)
		mine *= 2
	net = obs["kernel_alloc"] - obs["kernel_free"]
	slab_kept = 0
	# Slab rows count objects, not pages: no lower bound. The caches may
	# keep the pages they took (empty slabs up to min_partial, sheaves): the
	# pages that went to slabs (kernel_slab) are not a leak. So this check
	# sees a page leak of a slab cell, not a leaked 64-byte object. The
	# global slab counter lags (per-cpu differences folded later): it may
	# hold an earlier cell's slabs, so it only excuses a gain, never makes
	# a loss (seen: +14 slab pages in a cell that allocated one page, the
	# cells of one write of 'all' running back to back).
	if (obs["slab"] == 1) {
		mine = 0
		if (obs["kernel_slab"] + 0 > 0) {
			slab_kept = obs["kernel_slab"] + 0
			kept = " after the " obs["kernel_slab"] " pages the slab caches kept"
		}
	}
	# The shell's /proc/vmstat window (phase pagecheck) holds the module's:
	# the counters only grow, so the module's figures are within the
	# shell's, and differ by what the write and the markers around it cost.
	if ("shell_alloc" in obs) {
		if (obs["kernel_alloc"] + 0 > obs["shell_alloc"] + 0 || obs["kernel_free"] + 0 > obs["shell_free"] + 0)
			return "; the module counted +" obs["kernel_alloc"] " -" obs["kernel_free"] " pages over the cell, more than /proc/vmstat showed around it (+" obs["shell_alloc"] " -" obs["shell_free"] ")"
		if (obs["shell_alloc"] - obs["kernel_alloc"] > window_slack || obs["shell_free"] - obs["kernel_free"] > window_slack)
			return "; /proc/vmstat showed +" obs["shell_alloc"] " -" obs["shell_free"] " pages around the cell, the module +" obs["kernel_alloc"] " -" obs["kernel_free"] " over it (at most " window_slack " apart)"
	}
	if (obs["kernel_alloc"] + 0 < mine + 0)
		return "; the kernel counted " obs["kernel_alloc"] " pages allocated, fewer than the cell's " mine
	gain = max_gain + (obs["slab"] == 1 ? slab_lag : 0)
	if (net - slab_kept > gain)
		return "; pages leaked? the kernel allocated " obs["kernel_alloc"] " pages and freed " obs["kernel_free"] " during the cell (net +" (net - slab_kept) kept ", at most +" gain " without a leak)"
	if (net < -max_loss)
		return "; pages freed twice? the kernel allocated " obs["kernel_alloc"] " pages and freed " obs["kernel_free"] " during the cell (net " net ", at least -" max_loss " without one)"
	return ""
}

# mismatch(expect): what of the cell (obs) disagrees with one expectation
# (a comma-separated token list); "" if nothing.
function mismatch(expect,    want, exact, n, parts, i, kv, k, armed, bad, fails, kswapd, want_path) {
	# Tokens: report kinds (KIND or KIND=N), lock=NAME (the lock behind the
	# first report: a lockdep class, rtlock or might_sleep), observed_path=P
	# (the path the cell takes, when not the one it asked for), alloc_fails (every attempt
	# returns NULL) and kswapd (a kswapd wakeup, checked on path=slowpath,
	# where its absence is checked too); "clean" alone: none of them.
	fails = 0; kswapd = 0
	n = split(expect, parts, ",")
	for (i = 1; i <= n; i++) {
		if (parts[i] == "clean")
			continue
		if (parts[i] == "alloc_fails") { fails = 1; continue }
		if (parts[i] == "kswapd") { kswapd = 1; continue }
		split(parts[i], kv, "=")
		want[kv[1]] = 1
		if (kv[2] != "")
			exact[kv[1]] = kv[2]
	}
	armed = obs["lockdep_before"] == 1
	bad = ""
	# A field missing from the results line must not read as 0.
	for (i = 1; i <= nkinds; i++)
		if (!(kinds[i] in obs))
			bad = bad " missing " kinds[i] "="
	if (!("lockdep_before" in obs) || !("outcome" in obs))
		bad = bad " missing lockdep_before= or outcome="
	if (obs["kind"] == "alloc" && !("observed_path" in obs))
		bad = bad " missing observed_path="
	for (i = 1; i <= nkinds; i++) {
		k = kinds[i]
		if (use_derived(k)) {
			if (k in exact) {
				if ((obs["derived_" k] > 0) != (exact[k] > 0))
					bad = bad " derived_" k "=" obs["derived_" k] "(want " exact[k] ")"
			} else if ((obs["derived_" k] > 0) != (k in want)) {
				bad = bad " derived_" k "=" obs["derived_" k] "(want " ((k in want) ? ">0" : "0") ")"
			}
			continue
		}
		if (!armed && is_lockdep[k])
			continue
		if (k in exact) {
			if (obs[k] != exact[k])
				bad = bad " " k "=" obs[k] "(want " exact[k] ")"
		} else if ((obs[k] > 0) != (k in want)) {
			bad = bad " " k "=" obs[k] "(want " ((k in want) ? ">0" : "0") ")"
		}
	}
	# Exact values of keys that are not report kinds: unattributed, and
	# lock (the lock behind the first report), which lockdep names only
	# while armed.
	for (k in exact) {
		if (k == "lock" && derived_lock()) {
			if (derived_report_lock() != exact[k])
				bad = bad " derived lock=" derived_report_lock() "(want " exact[k] ")"
			continue
		}
		if (!(k in is_kind) && !(k == "lock" && !armed) && obs[k] != exact[k])
			bad = bad " " k "=" obs[k] "(want " exact[k] ")"
	}
	if (obs["outcome"] != "ran")
		bad = bad " outcome=" obs["outcome"] "(want ran)"
	# A clean cell, or one expected to raise no lockdep report, must leave
	# lockdep armed: only a cell's own lockdep report may turn it off.
	if (armed && !("invalid_wait_context" in want) && !("lockdep_other" in want) && obs["lockdep_after"] != 1)
		bad = bad " lockdep_after=" obs["lockdep_after"] "(want 1: no lockdep report was expected)"
	if (obs["kind"] == "alloc") {
		if (fails && obs["allocated"] != 0)
			bad = bad " allocated=" obs["allocated"] "(want 0)"
		if (obs["path"] == "slowpath" && (obs["kswapd_wakeups"] > 0) != kswapd)
			bad = bad " kswapd_wakeups=" obs["kswapd_wakeups"] "(want " (kswapd ? ">0" : "0") ")"
		# An alternative may name the path it takes (observed_path=, an
		# exact key above); otherwise the cell must take the path it asked
		# for.
		want_path = fails ? "none" : obs["path"]
		if (!("observed_path" in exact) && obs["observed_path"] != want_path)
			bad = bad " observed_path=" obs["observed_path"] "(want " want_path ")"
	}
	return bad
}

# use_derived(kind): in derived mode, whether the cell is judged on the
# module's derived verdict of kind instead of the kernel's report: the
# kernel could not print it (lockdep off; the sleep check's rate limit).
function use_derived(k) {
	if (!derived || !("locks" in obs))
		return 0
	if (k == "invalid_wait_context")
		return obs["lockdep_before"] != 1
	if (k == "sleeping_in_atomic")
		return obs["sleep_check_open"] != 1
	return 0
}

# derived_report_lock(): the first derived verdict named as the kernel's
# report would name it (the capture of lock=): a lockdep class for an
# invalid wait context, rtlock for a PREEMPT_RT sleeping lock (its report
# names no class), might_sleep for a sleep check or a lock that may sleep
# anywhere (LD_WAIT_SLEEP, inner wait type 4).
function derived_report_lock(    n, entries, i, m, parts, flags, name) {
	if (obs["derived_lock"] == "might_sleep" || obs["locks"] == "-")
		return obs["derived_lock"]
	n = split(obs["locks"], entries, ",")
	for (i = 1; i <= n; i++) {
		m = split(entries[i], parts, ":")
		flags = parts[m - 1]
		if (flags ~ /W/) {
			name = parts[1]
			sub(/@[^@]*$/, "", name)
			return name
		}
		if (flags ~ /S/)
			return parts[2] == 4 ? "might_sleep" : "rtlock"
	}
	return "-"
}

# derived_observed(): the derived verdicts, for the description.
function derived_observed(    s) {
	s = ""
	if (obs["derived_invalid_wait_context"] > 0)
		s = s " invalid_wait_context"
	if (obs["derived_sleeping_in_atomic"] > 0)
		s = s " sleeping_in_atomic"
	return s == "" ? " clean" : s
}

# derived_lock(): in derived mode, whether lock= (the cause of the first
# report) is judged by the first derived verdict: some kernel report of
# the cell may be missing.
# A lockdep_other report (a usage state, which no lock trace derives) keeps
# the kernel's own name: lockdep printed it in order, before any check that
# could have come later.
function derived_lock() {
	return (use_derived("invalid_wait_context") || use_derived("sleeping_in_atomic")) && !(obs["lockdep_other"] > 0)
}

# check(row): judges the cell against its row, whose expect column may hold
# alternatives separated by "|" (outcomes the kernel's state decides between,
# each named in the row's reason): the cell must match one of them. An ok
# verdict carries them (a sixth field), for the reports to show the cell as
# decided by the kernel's state, not as one fixed answer.
function check(row,    expect, nalt, alt, i, b, armed, bad, observed, pages) {
	expect = rexpect[row]
	armed = obs["lockdep_before"] == 1
	observed = ""
	for (i = 1; i <= nkinds; i++)
		if (obs[kinds[i]] > 0)
			observed = observed " " kinds[i] "=" obs[kinds[i]]
	if (obs["kind"] == "alloc") {
		# A pcp cell whose task left the CPU it filled the list of, in
		# every attempt, is run again in another boot, never judged.
		if (obs["migrated"] == 1) {
			printf "retry\t%s: left the CPU whose per-cpu list or sheaf it filled, %d attempts\t%s\t%d\t%s\n", name, obs["attempts"], rreason[row], row, spec
			return
		}
		# rmqueue() wakes kswapd when the zone's watermark is boosted
		# (ZONE_BOOSTED_WATERMARK, set by another task's fallback): a
		# spinlock_t wait queue, which is not the per-cpu path under test.
		if (obs["path"] == "pcp" && obs["kswapd_wakeups"] > 0) {
			printf "retry\t%s: woke kswapd (boosted watermark), not the pure per-cpu path\t%s\t%d\t%s\n", name, rreason[row], row, spec
			return
		}
		# The state the cell needed was not there (path=slowpath), or the
		# kernel's once-per-10 s allocation failure warning was spent.
		if (obs["unsettled"] != "" && obs["unsettled"] != "-") {
			printf "retry\t%s: not answered in this kernel's state (%s)\t%s\t%d\t%s\n", name, obs["unsettled"], rreason[row], row, spec
			return
		}
	}
	nalt = split(expect, alt, "|")
	# The sleep check's report of another context (unattributed=) exists
	# only where the kernel could print it.
	if (derived && obs["sleep_check_open"] != 1 && index(expect, "unattributed")) {
		printf "retry\t%s: expects the kernel's own sleep report, which its rate limit held back\t%s\t%d\t%s\n", name, rreason[row], row, spec
		return
	}
	# One load carries each cell's state into the next: a per-cpu list
	# grown by earlier cells can serve all n allocations of a cell that
	# asks for zone->lock. Run again from a fresh state, not judged.
	if (derived && obs["kind"] == "alloc" && obs["observed_path"] == "pcp" && obs["path"] != "pcp") {
		printf "retry\t%s: served from the per-cpu list in one load (path %s not reached)\t%s\t%d\t%s\n", name, obs["path"], rreason[row], row, spec
		return
	}
	# A trace that lost a release, or kept only part of the locks, does
	# not answer: run again where lockdep and the sleep check report.
	if (derived && ("locks" in obs) && (obs["locks_held_after"] > 0 || obs["locks_dropped"] > 0)) {
		printf "retry\t%s: the lock trace does not answer (locks_held_after=%s locks_dropped=%s)\t%s\t%d\t%s\n", name, obs["locks_held_after"], obs["locks_dropped"], rreason[row], row, spec
		return
	}
	if (derived && !armed && index(expect, "lockdep_other")) {
		printf "retry\t%s: lockdep_other expected, which only lockdep itself reports (disarmed before the cell)\t%s\t%d\t%s\n", name, rreason[row], row, spec
		return
	}
	bad = mismatch(alt[1])
	for (i = 2; i <= nalt && bad != ""; i++) {
		b = mismatch(alt[i])
		if (b == "")
			bad = ""
	}
	if (observed == "")
		observed = " clean"
	if (obs["path"] == "slowpath")
		observed = observed ", kswapd_wakeups=" obs["kswapd_wakeups"] " allocated=" obs["allocated"]
	pages = pages_problem()
	if (bad != "") {
		printf "not_ok\t%s: expected %s, observed%s%s\tmismatch:%s; expectation: %s; observed: %s\t%d\t%s\n", name, expect, observed, pages, bad, rreason[row], $0, row, spec
	} else if (pages != "") {
		printf "not_ok\t%s:%s%s\tobserved: %s\t%d\t%s\n", name, observed, pages, $0, row, spec
	} else if (!armed && !(derived && "locks" in obs)) {
		printf "retry\t%s: not checked by lockdep (disarmed before the cell)\t%s\t%d\t%s\n", name, rreason[row], row, spec
	} else if (derived_lock()) {
		printf "ok\t%s:%s, by the lock trace%s, as expected\t%s\t%d\t%s\t%s\n", name, observed, derived_observed(), rreason[row], row, spec, (nalt > 1 ? expect : "")
	} else {
		printf "ok\t%s:%s as expected\t%s\t%d\t%s\t%s\n", name, observed, rreason[row], row, spec, (nalt > 1 ? expect : "")
	}
}
