# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phase cases: the cases file lists exactly the cells this kernel's
# config and symbols call for, decided from the kernel itself.

# -- cases -------------------------------------------------------------------

# config_has OPTION: the running kernel's config has OPTION=y.
config_has() {
	[ -f /tmp/config ] || zcat /proc/config.gz >/tmp/config
	grep -q "^$1=y$" /tmp/config
}

# The kernel symbols the rows depend on, found in one pass over kallsyms
# (a large file: one grep each costs seconds under TCG).
ROW_SYMBOLS="alloc_pages_nolock_noprof rust_helper_local_interrupt_disable __local_bh_disable_ip _kmalloc_nolock_noprof kfree_nolock __SCT__apic_call_send_IPI_mask kfree_call_rcu_nolock"
has_symbol() {
	if [ -z "${KALLSYMS_FOUND+set}" ]; then
		KALLSYMS_FOUND=" $(grep -E " ($(echo "$ROW_SYMBOLS" | tr ' ' '|'))\$" /proc/kallsyms | awk '{ printf "%s ", $3 }')"
	fi
	case $KALLSYMS_FOUND in *" $1 "*) return 0 ;; esac
	return 1
}

# expected_cases: the cells the module's tables call for on this kernel, in
# the module's `run all` order (every allocation row, then every freeing
# row, context by context; the controls last), the rows that depend on the
# kernel decided from the kernel itself (config and symbols), never from
# the module: the bottom-half rows need __local_bh_disable_ip() in
# kallsyms, the nmi row the static call trampoline
# __SCT__apic_call_send_IPI_mask, the preempt_disable row needs
# CONFIG_DEBUG_PREEMPT or CONFIG_TRACE_PREEMPT_TOGGLE (preempt_count_add()
# is exported only then), local_irq_disable the kernel crate's
# local_interrupt_disable() (its C helper is in kallsyms),
# alloc_pages_nolock() its symbol, and the kmalloc_nolock()/kfree_nolock()
# rows both symbols and no CONFIG_KMALLOC_PARTITION_CACHES (whose extra
# argument the module does not pass), the kfree_rcu() rows the sheaves (no
# CONFIG_SLUB_TINY) and kfree_rcu_nolock() its symbol; Kbuild detects the
# same in the tree. kvfree_call_rcu() skips the sheaves on PREEMPT_RT
# (mm/slab_common.c): there its rows' path is the krc bulk path, else the
# barn's empty sheaf.
expected_cases() {
	preempt=""
	if config_has CONFIG_DEBUG_PREEMPT || config_has CONFIG_TRACE_PREEMPT_TOGGLE; then
		preempt=preempt_disable
	fi
	nolock=0
	! has_symbol alloc_pages_nolock_noprof || nolock=1
	irq=""
	! has_symbol rust_helper_local_interrupt_disable || irq=local_irq_disable
	masks="GFP_KERNEL GFP_NOWAIT GFP_ATOMIC 0 __GFP_HIGH GFP_ATOMIC|__GFP_NOWARN __GFP_NOWARN"
	# The hard irq row and control need x86 (the detector reads x86's
	# per-cpu preempt_count() to attribute them).
	hardirq=""
	[ "$(uname -m)" != x86_64 ] || hardirq=hardirq
	# Bottom halves: __local_bh_disable_ip() is a function (exported) with
	# CONFIG_TRACE_IRQFLAGS or PREEMPT_RT only; the softirq row needs x86
	# too, like hardirq.
	bh=""
	softirq=""
	if has_symbol __local_bh_disable_ip; then
		bh=local_bh_disable
		[ -z "$hardirq" ] || softirq=softirq
	fi
	# Slab: kmalloc() with the masks that change what slab does
	# (GFP_KERNEL's might_alloc(), and what the page allocator does for a
	# new slab). None with CONFIG_SLUB_TINY, which has no per-cpu sheaves.
	slab_masks="GFP_KERNEL GFP_NOWAIT GFP_ATOMIC 0"
	slab=1
	! config_has CONFIG_SLUB_TINY || slab=0
	slab_nolock=0
	if [ "$slab" -eq 1 ] && has_symbol _kmalloc_nolock_noprof && has_symbol kfree_nolock &&
		! config_has CONFIG_KMALLOC_PARTITION_CACHES; then
		slab_nolock=1
	fi
	rcu_nolock=0
	[ "$slab" -eq 0 ] || ! has_symbol kfree_call_rcu_nolock || rcu_nolock=1
	rcu_path=barn
	! config_has CONFIG_PREEMPT_RT || rcu_path=krc
	# NMI: a self-NMI through the exported static call trampoline of
	# apic_call_send_IPI_mask (x86); only the allocators for any context
	# run there.
	nmi=""
	[ -z "$hardirq" ] || ! has_symbol __SCT__apic_call_send_IPI_mask || nmi=nmi
	contexts="process rcu_read_lock spin_lock $bh $softirq $preempt $irq raw_spin_lock raw_spin_lock_irqsave $hardirq $nmi"
	for ctx in $contexts; do
		[ "$nolock" -eq 0 ] || echo "ctx=$ctx alloc=alloc_pages_nolock gfp=0 order=0 path=zone_lock n=4096"
		if [ "$ctx" != nmi ]; then
			for m in $masks; do echo "ctx=$ctx alloc=get_free_page gfp=$m order=0 path=zone_lock n=4096"; done
			for m in $masks; do echo "ctx=$ctx alloc=get_free_pages gfp=$m order=4 path=zone_lock n=4096"; done
		fi
		[ "$slab_nolock" -eq 0 ] || echo "ctx=$ctx alloc=kmalloc_nolock gfp=0 order=0 path=new_slab n=4096"
		[ "$ctx" = nmi ] || [ "$slab" -eq 0 ] || for m in $slab_masks; do echo "ctx=$ctx alloc=kmalloc gfp=$m order=0 path=new_slab n=4096"; done
	done
	for ctx in $contexts; do
		if [ "$ctx" != nmi ]; then
			echo "ctx=$ctx alloc=free_page gfp=0 order=0 path=zone_lock n=32768"
			echo "ctx=$ctx alloc=free_pages gfp=0 order=4 path=zone_lock n=1"
			[ "$slab" -eq 0 ] || echo "ctx=$ctx alloc=kfree gfp=0 order=0 path=pcp n=1"
		fi
		[ "$slab_nolock" -eq 0 ] || echo "ctx=$ctx alloc=kfree_nolock gfp=0 order=0 path=pcp n=1"
		if [ "$ctx" != nmi ] && [ "$slab" -eq 1 ]; then
			echo "ctx=$ctx alloc=kfree_rcu gfp=0 order=0 path=$rcu_path n=1"
			echo "ctx=$ctx alloc=kvfree_rcu_mightsleep gfp=0 order=0 path=$rcu_path n=1"
		fi
		[ "$rcu_nolock" -eq 0 ] || echo "ctx=$ctx alloc=kfree_rcu_nolock gfp=0 order=0 path=barn n=1"
	done
	echo "control=empty"
	echo "control=spin_lock_under_raw_spin_lock"
	[ -z "$preempt" ] || echo "control=might_sleep_under_preempt_disable"
	[ -z "$hardirq" ] || echo "control=might_sleep_in_interrupt_on_cell_cpu"
}

phase_cases() {
	load_module
	# The host requires a settled result for each of these (scripts/check,
	# scripts/matrix): no cell of the matrix may go missing. Their order is
	# the order the host runs waiting cells in (allocations before frees,
	# which leave the per-cpu lists full).
	expected_cases >/tmp/cases.expected
	sed 's/^/# CASE /' /tmp/cases.expected
	want=$(wc -l </tmp/cases.expected)
	if cmp -s /tmp/cases.expected "$DEBUGFS/cases"; then
		pass "cases: the $want cells this kernel's config and symbols call for, no more, no fewer, in run-all order"
	else
		fail "cases: $(wc -l <"$DEBUGFS/cases") listed, $want expected (or another order)"
		diff /tmp/cases.expected "$DEBUGFS/cases" | sed -n 's/^\([-+][^-+]\)/# \1/p' | head -n 20
	fi
}
