# SPDX-License-Identifier: GPL-2.0
#
# The module's derived verdicts against the kernel's own reports, cell by
# cell: the two kinds of evidence the results line keeps apart.
# usage: awk -f derived.awk RESULTS
# RESULTS: one results line per line (as expect.awk reads them). Prints, for
# every cell that ran, settled, with a lock trace (locks=), where the kernel
# could print at least one of the two kinds (lockdep armed when the cell
# began, or the sleep check's limit expired), or whose trace does not
# balance:
#   "ok|not_ok<TAB>description<TAB>detail"
#
# Invalid wait context: lockdep checks an acquisition while it is armed,
# and reports the first one check_wait_context() rejects. So the kernel
# printed "[ BUG: Invalid wait context ]" in this cell exactly when the
# trace holds an acquisition flagged W (rejected) without D (lockdep
# already disarmed); and when that report was the cell's first (lock= is
# a lock class, not might_sleep or rtlock), it names the first such lock.
#
# Sleeping in atomic: __might_resched() prints the first failing check
# when its once-per-second limit has expired (sleep_check_open=1). So the
# kernel printed "BUG: sleeping function called from invalid context"
# exactly when the module derived one (a might_sleep() whose test fails, or
# a sleeping lock flagged S); and a kernel report from might_sleep() (lock=
# might_sleep) is the derived one's first.

function field(name,    i, n) {
	n = length(name) + 1
	for (i = 1; i <= NF; i++)
		if (substr($i, 1, n) == name "=")
			return substr($i, n + 1)
	return ""
}

# The first acquisition of locks= flagged W and not D, by name; "-" if none.
# Entries: NAME@SITE:INNER:OUTER:TYPE:TRY:READ:ALLOWED:IRQCTX:PREEMPT:RCU:IRQSOFF:FLAGS:COUNT
function first_armed_wait(locks,    entries, n, i, parts, m, flags, name) {
	if (locks == "-")
		return "-"
	n = split(locks, entries, ",")
	for (i = 1; i <= n; i++) {
		m = split(entries[i], parts, ":")
		flags = parts[m - 1]
		if (flags ~ /W/ && flags !~ /D/) {
			name = parts[1]
			sub(/@[^@]*$/, "", name)
			return name
		}
	}
	return "-"
}

{
	locks = field("locks")
	if (locks == "" || field("outcome") != "ran" || field("unsettled") != "-")
		next
	spec = field("kind") == "control" ? "control=" field("control") : \
		"ctx=" field("ctx") " alloc=" field("alloc") " gfp=" field("gfp") " order=" field("order") " path=" field("path") " n=" field("n")
	lock = field("lock")
	problems = ""
	compared = ""

	# The trace must balance: a lock it saw taken and never released
	# means a release it missed, and every later verdict of the cell
	# rests on a wrong held stack.
	if (field("locks_held_after") + 0 > 0)
		problems = problems sprintf("; the trace ends with %d locks held (first %s): it missed a release", field("locks_held_after"), field("locks_left"))

	# A trace that dropped acquisitions past the entries it keeps may
	# have dropped the rejection the kernel reported: not compared.
	if (field("locks_dropped") + 0 > 0 && problems == "")
		next

	# Only where the kernel could report: lockdep armed when the cell
	# began (a report of another kind may disarm it midway: its later
	# acquisitions are flagged D and count for neither side), and the
	# sleep check's limit expired.
	if (field("lockdep_before") == "1") {
		compared = compared " invalid_wait_context"
		kernel_wait = field("invalid_wait_context") + 0
		armed_wait = first_armed_wait(locks)
		if ((kernel_wait > 0) != (armed_wait != "-"))
			problems = problems sprintf("; lockdep reported %d invalid wait contexts, the trace's first armed rejection is %s", kernel_wait, armed_wait)
		else if (kernel_wait > 0 && lock != "might_sleep" && lock != "rtlock" && lock != armed_wait)
			problems = problems sprintf("; lockdep named %s, the trace %s", lock, armed_wait)
	}

	if (field("sleep_check_open") == "1") {
		compared = compared " sleeping_in_atomic"
		kernel_sleep = field("sleeping_in_atomic") + 0
		derived_sleep = field("derived_sleeping_in_atomic") + 0
		if ((kernel_sleep > 0) != (derived_sleep > 0))
			problems = problems sprintf("; the kernel printed %d sleeping reports, the module derived %d", kernel_sleep, derived_sleep)
		else if (lock == "might_sleep" && field("derived_lock") != "might_sleep")
			problems = problems sprintf("; the kernel's first report is might_sleep(), the module's first verdict %s", field("derived_lock"))
	}

	# A cell where the kernel could report neither kind proves nothing:
	# no line (unless its trace is broken).
	if (compared == "" && problems == "")
		next
	desc = "derived verdicts equal the kernel's reports (" substr(compared, 2) "): " spec
	if (problems == "")
		printf "ok\t%s\t-\n", desc
	else
		printf "not_ok\t%s\t%s (lock=%s derived_lock=%s)\n", desc, substr(problems, 3), lock, field("derived_lock")
}
