# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phase config: the running kernel has every option of its flavor's
# fragments and a sub-microsecond clocksource.

# -- config ------------------------------------------------------------------

phase_config() {
	zcat /proc/config.gz >/tmp/config
	for frag in base "$FLAVOR"; do
		# Each CONFIG_X=v or "# CONFIG_X is not set" line of the fragment
		# against the running kernel's value (unset counts as n).
		result=$(awk '
			FNR == NR { if (match($0, /^CONFIG_[A-Za-z0-9_]*=/)) have[substr($0, 1, RLENGTH - 1)] = substr($0, RLENGTH + 1); next }
			/^CONFIG_[A-Za-z0-9_]*=/ { eq = index($0, "="); name = substr($0, 1, eq - 1); want = substr($0, eq + 1) }
			/^# CONFIG_[A-Za-z0-9_]* is not set$/ { name = $2; want = "n" }
			name != "" { total++; got = (name in have) ? have[name] : "n"; if (got != want) missing = missing " " name "=" got "(want " want ")"; name = "" }
			END { printf "%d%s", total, missing }' /tmp/config "/rgn/configs/$frag.config")
		total=${result%% *}
		missing=${result#"$total"}
		if [ -z "$missing" ]; then
			pass "kernel_config: all $total options of $frag.config are set"
		else
			fail "kernel_config: $frag.config options missing:$missing"
		fi
	done
	check_clocksource
}

# Timings need a clocksource finer than a microsecond: not jiffies, which
# is what a guest without an HPET or ACPI PM timer reference falls back to.
check_clocksource() {
	cs=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)
	case $cs in
	tsc | hpet | acpi_pm) pass "clocksource: $cs (sub-microsecond; available: $(cat /sys/devices/system/clocksource/clocksource0/available_clocksource))" ;;
	*) fail "clocksource: $cs is coarse; timings would move in jiffies (needs HPET or the ACPI PM timer as a TSC reference)" ;;
	esac
}
