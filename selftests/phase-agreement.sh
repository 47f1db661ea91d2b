# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phase agreement: the module's totals equal an independent count of
# the kernel log; no page leaked around cells:all.

# How far settled free pages (see free_pages) may drift around the full
# matrix without a leak. Measured: -9 to +13 before the slab rows, +14 to
# +70 with them (memory outside the counted consumers given back); a leak
# of one page per cell would be -120. A leak only lowers free pages: a rise
# is allowed up to MATRIX_PAGES_RISE. Past the tolerance, drift_from
# measures again.
MATRIX_PAGES_TOLERANCE=48
MATRIX_PAGES_RISE=192

# -- agreement ---------------------------------------------------------------

# Counts report headers in the kernel log since the module was last loaded,
# by the same rules the module uses, but from dmesg after the fact.
log_report_counts() {
	dmesg >"$T/dmesg"
	awk -v mode=totals -f "$SELFTESTS/log-headers.awk" "$T/dmesg"
}

phase_agreement() {
	if ! module_loaded; then
		fail "agreement: the module is not loaded, there is nothing to compare"
		return
	fi
	module=""
	report_kinds
	unattributed=$(counter unattributed)
	for k in $KINDS; do
		module="$module$k=$(counter "$k") "
	done
	module=${module% }
	log=$(log_report_counts)
	# The log's classifier keeps its own list of kinds (log-headers.awk):
	# it must name the kinds the module's table names, or a kind one side
	# lacks would go uncounted.
	log_kinds=$(echo "$log" | tr ' ' '\n' | sed 's/=.*//' | sort | tr '\n' ' ')
	table_kinds=$(echo "$KINDS" | tr ' ' '\n' | sed '/^$/d' | sort | tr '\n' ' ')
	if [ "$log_kinds" = "$table_kinds" ]; then
		pass "the kernel log's classifier and the module's tables name the same report kinds: ${table_kinds% }"
	else
		fail "report kinds: the module's tables name '${table_kinds% }', the log's classifier (log-headers.awk) '${log_kinds% }': add the kind to both"
	fi
	# Per kind the log holds at least the cells' reports; in all, exactly
	# those plus the unattributed ones.
	verdict=$(echo "$module $log" | awk -v u="$unattributed" '{
		for (i = 1; i <= NF; i++) { split($i, kv, "="); if (i <= NF / 2) { m[kv[1]] = kv[2]; ms += kv[2] } else { l[kv[1]] = kv[2]; ls += kv[2] } }
		ok = (ls == ms + u); for (k in m) if (l[k] < m[k]) ok = 0; print ok }')
	if [ "$verdict" = 1 ]; then
		pass "detector totals agree with the kernel log since load: $log, $unattributed of them unattributed"
	else
		fail "detector totals: counters '$module' (unattributed $unattributed), kernel log '$log'"
	fi
	# The full matrix of cells:all left nothing behind once its results
	# are cleared, by the kernel's own accounting of free pages.
	if [ -f /tmp/free_before_matrix ]; then
		cells=$(counter cells_run)
		echo 1 >"$DEBUGFS/reset"
		before=$(cat /tmp/free_before_matrix)
		drift=$(drift_from "$before" "$MATRIX_PAGES_TOLERANCE")
		summary="settled free pages $before before, $((before + drift)) after (drift $drift, tolerance -$MATRIX_PAGES_TOLERANCE to +$MATRIX_PAGES_RISE)"
		if [ "$drift" -ge "-$MATRIX_PAGES_TOLERANCE" ] && [ "$drift" -le "$MATRIX_PAGES_RISE" ]; then
			pass "no page leak around the full matrix ($cells cells): $summary"
		else
			fail "page leak around the full matrix ($cells cells)? $summary"
		fi
	fi
	if [ -s "$T/cells.pages" ]; then
		awk '{ n = $NF; if (n < lo || NR == 1) lo = n; if (n > hi || NR == 1) hi = n }
			END { printf "# kernel page accounting over %d cells: net from %d to %d pages\n", NR, lo, hi }' "$T/cells.pages"
	fi
}
