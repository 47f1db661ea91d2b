# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phase load: the module loads, its debugfs files exist.

# -- load --------------------------------------------------------------------

phase_load() {
	check "module: insmod rust_gfp_nolocks.ko" load_module
	missing=""
	for f in run reset settle results last cases lockdep counters/cells_run counters/cells_refused counters/allocs_ok counters/unattributed; do
		[ -e "$DEBUGFS/$f" ] || missing="$missing $f"
	done
	# A counter for each report kind the module's table names, and at
	# least the two the lock trace derives.
	for k in $KINDS invalid_wait_context sleeping_in_atomic; do
		[ -e "$DEBUGFS/counters/$k" ] || missing="$missing counters/$k"
	done
	if [ -z "$missing" ]; then pass "module: debugfs files present"; else fail "module: debugfs files missing:$missing"; fi
}
