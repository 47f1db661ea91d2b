# SPDX-License-Identifier: GPL-2.0
#
# The saved guest's kernel log reader (scripts/guest-init starts it before
# the VM is saved): reads /dev/kmsg records (through a FIFO from a cat that
# the guest keeps stopped while cells run) and prints, as dmesg would, only
# the lines the host's judge reads: cell markers, report headers and the
# line before each (what `dmesg | grep -B 1` printed, without a fork per
# restore, the first of which costs a restore about 0.15 s under TCG).
#
# usage: awk -v done=FIFO -f klog.awk <records
#   Skips the log up to "rgn: log reader ready", then prints until
#   "rgn: log reader flush"; at each of the two it writes "done" to FIFO,
#   which the guest's shell waits on, and "end" at its end.

# signal(answer): tells the waiting shell that everything before the
# marker is out ("done"), or that the log ended ("end").
function signal(answer) {
	fflush()
	print answer >done
	close(done)
}

# Continuation lines of a record (" KEY=value" device properties).
/^ / { next }

{
	semi = index($0, ";")
	split(substr($0, 1, semi - 1), field, ",")
	text = substr($0, semi + 1)
	if (text == "rgn: log reader ready") {
		printing = 1
		signal("done")
		next
	}
	if (!printing)
		next
	if (text == "rgn: log reader flush") {
		signal("done")
		next
	}
	usec = field[3]
	line = sprintf("[%5d.%06d] %s", int(usec / 1000000), usec % 1000000, text)
	if (text ~ /^rgn: cell [0-9]+ (begin|end)$/ || text ~ /^(\[ )?BUG:/ || text ~ /^WARNING:/) {
		if (prev != "")
			print prev
		print line
		prev = ""
	} else {
		prev = line
	}
}

# The cat ended (a read error: records overwritten, or one longer than its
# buffer): the shell must not wait for a marker that will not come.
END { signal("end") }
