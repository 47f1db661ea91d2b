# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
#
# Phase badinput: malformed specs get EINVAL, a log line naming the
# token, no change.

# -- badinput ----------------------------------------------------------------

# bad_spec DESCRIPTION TOKEN: writes the spec in /tmp/spec (one write) and
# checks EINVAL, a log line naming TOKEN, and unchanged counters and results.
bad_spec() {
	snapshot
	before=$SNAPSHOT
	err=$(dd if=/tmp/spec of="$DEBUGFS/run" bs=65536 count=1 2>&1)
	logged=$(dmesg | awk '/rgn: bad input case done/ { l = "" } /rust_gfp_nolocks: (run|reset):/ { l = $0 } END { print l }')
	snapshot
	problems=""
	case $err in *"Invalid argument"*) ;; *) problems="$problems write did not fail with EINVAL ($err);" ;; esac
	case $logged in *"$2"*) ;; *) problems="$problems log line does not name '$2' ($logged);" ;; esac
	[ "$before" = "$SNAPSHOT" ] || problems="$problems counters or results changed ($before -> $SNAPSHOT);"
	if [ -z "$problems" ]; then
		pass "bad input $1: EINVAL, logged '$2', nothing changed"
	else
		fail "bad input $1:$problems"
	fi
	# Make the next case's log line unambiguous.
	echo "rgn: bad input case done" >/dev/kmsg
}

bad() {
	printf '%s' "${2%_}" >/tmp/spec
	bad_spec "$1" "$3"
}

# badinput_rows: the refusals of the rows a kernel may lack (slab, the
# kfree_rcu() rows, the nmi row), where this kernel has them.
badinput_rows() {
	# The slab rows' own refusals, where the kernel has them.
	if grep -q ' alloc=kmalloc ' "$DEBUGFS/cases"; then
		bad "page path on a slab row" "ctx=process alloc=kmalloc gfp=GFP_ATOMIC path=zone_lock" "takes no path=zone_lock"
		bad "slab free on the slow path" "ctx=process alloc=kfree gfp=0 path=new_slab" "takes no path=new_slab (its paths: pcp)"
		bad "mask the slab rows leave out" "ctx=process alloc=kmalloc gfp=__GFP_HIGH" "does not take gfp=__GFP_HIGH"
		bad "slab per-cpu path with n=2" "ctx=process alloc=kmalloc gfp=GFP_ATOMIC path=pcp n=2" "n=1 only"
		bad "slab row above order 0" "ctx=process alloc=kmalloc gfp=0 order=1" "order 0 only"
	fi
	# The kfree_rcu() rows' refusals: a free takes no mask, a sheaf path
	# no more frees than leave the sheaf room, a page path is not theirs,
	# a kfree_rcu() path is no page row's; PREEMPT_RT's kvfree_call_rcu()
	# has no sheaf path.
	if grep -q ' alloc=kfree_rcu ' "$DEBUGFS/cases"; then
		rcu_path=$(sed -n 's/^ctx=process alloc=kfree_rcu .* path=\([a-z_]*\) .*/\1/p' "$DEBUGFS/cases")
		bad "mask on a kfree_rcu() row" "ctx=process alloc=kfree_rcu gfp=GFP_ATOMIC" "does not take gfp=GFP_ATOMIC"
		bad "page path on a kfree_rcu() row" "ctx=process alloc=kvfree_rcu_mightsleep gfp=0 path=zone_lock" "takes no path=zone_lock"
		bad "kfree_rcu() path on a page row" "ctx=process alloc=get_free_page gfp=0 path=barn" "takes no path=barn"
		bad "kfree_rcu() row above order 0" "ctx=process alloc=kfree_rcu gfp=0 order=1" "order 0 only"
		if [ "$rcu_path" = krc ]; then
			bad "sheaf path where kvfree_call_rcu() skips the sheaves" "ctx=process alloc=kfree_rcu gfp=0 path=sheaf" "takes no path=sheaf (its paths: krc, krc_empty)"
		else
			bad "sheaf path past the sheaf's room" "ctx=process alloc=kfree_rcu gfp=0 path=sheaf n=33" "n up to 32"
			bad "bulk path where the sheaves come first" "ctx=process alloc=kfree_rcu gfp=0 path=krc" "takes no path=krc (its paths: barn, sheaf, new_sheaf)"
			bad "emptied bulk path where the sheaves come first" "ctx=process alloc=kvfree_rcu_mightsleep gfp=0 path=krc_empty" "takes no path=krc_empty"
		fi
	fi
	# Only allocators callable from any context run in the nmi row.
	if grep -q '^ctx=nmi ' "$DEBUGFS/cases"; then
		bad "allocator not legal in NMI" "ctx=nmi alloc=get_free_page gfp=0" "callable from any context"
		bad "freeing row in NMI" "ctx=nmi alloc=free_page gfp=0" "callable from any context"
		! grep -q ' alloc=kfree ' "$DEBUGFS/cases" ||
			bad "slab free in NMI" "ctx=nmi alloc=kfree gfp=0" "callable from any context"
		! grep -q ' alloc=kfree_rcu ' "$DEBUGFS/cases" ||
			bad "kfree_rcu() in NMI" "ctx=nmi alloc=kfree_rcu gfp=0" "callable from any context"
	fi
}

phase_badinput() {
	load_module
	good="ctx=process alloc=get_free_page"
	bad "empty line" "$(printf '\n_')" "empty spec"
	bad "blanks only" "   " "empty spec"
	bad "unknown context" "ctx=bogus alloc=get_free_page gfp=GFP_ATOMIC" "'bogus'"
	bad "unknown allocator" "ctx=process alloc=vmalloc gfp=GFP_ATOMIC" "'vmalloc'"
	bad "unknown mask" "$good gfp=GFP_BOGUS" "'GFP_BOGUS'"
	bad "mask in lower case" "$good gfp=gfp_atomic" "'gfp_atomic'"
	bad "missing gfp" "$good" "missing gfp="
	bad "missing ctx" "alloc=get_free_page gfp=GFP_ATOMIC" "missing ctx="
	bad "order not a number" "ctx=process alloc=get_free_pages gfp=0 order=abc" "'order=abc'"
	bad "negative order" "ctx=process alloc=get_free_pages gfp=0 order=-1" "'order=-1'"
	bad "order above MAX_PAGE_ORDER" "ctx=process alloc=get_free_pages gfp=0 order=11" "'order=11'"
	bad "fixed order changed" "$good gfp=0 order=2" "order 0 only"
	bad "n=0" "$good gfp=0 n=0" "n=0"
	bad "n overflowing u64" "$good gfp=0 n=99999999999999999999999" "'n=99999999999999999999999'"
	bad "n above the cap" "$good gfp=0 n=65537" "'n=65537'"
	bad "unknown key" "$good gfp=0 bogus=1" "unknown key 'bogus'"
	bad "token without =" "$good gfp=0 trailing" "'trailing'"
	bad "key given twice" "ctx=process $good gfp=0" "'ctx' given twice"
	bad "selection term without =" "all extra" "'extra' after 'all' is not KEY=VALUE"
	bad "selection with an unknown key" "all context=process" "unknown key 'context'"
	bad "selection with an unknown context" "all ctx=raw" "ctx is one of: process, "
	bad "selection with an unknown mask" "all gfp=GFP_ATOMIC,GFP_BOGUS" "gfp is one of: GFP_KERNEL, "
	bad "selection key given twice" "all ctx=process ctx=hardirq" "'ctx' given twice"
	bad "selection that matches no case" "all control=empty ctx=process" "matches no case of this kernel"
	bad "unknown control" "control=nope" "'nope'"
	bad "control with other keys" "control=empty ctx=process" "takes no other key"
	bad "unknown path" "$good gfp=0 path=slow" "'slow'"
	bad "order never on per-cpu lists" "ctx=process alloc=get_free_pages gfp=0 order=4 path=pcp" "per-cpu lists"
	bad "mask alloc_pages_nolock refuses" "ctx=process alloc=alloc_pages_nolock gfp=GFP_ATOMIC" "does not take gfp=GFP_ATOMIC"
	bad "blocking mask on the per-cpu path" "ctx=process alloc=get_free_page gfp=GFP_KERNEL path=pcp" "__GFP_DIRECT_RECLAIM"
	bad "blocking mask on the slow path" "ctx=process alloc=get_free_page gfp=GFP_KERNEL path=slowpath" "direct reclaim"
	bad "alloc_pages_nolock above the per-cpu orders" "ctx=process alloc=alloc_pages_nolock gfp=0 order=4" "order 3 at most"
	bad "slab path on a page row" "ctx=process alloc=get_free_page gfp=GFP_ATOMIC path=new_slab" "takes no path=new_slab"
	bad "page free on the slow path" "ctx=process alloc=free_page gfp=0 path=slowpath" "takes no path=slowpath (its paths: zone_lock, pcp)"
	bad "per-cpu free above the per-cpu orders" "ctx=process alloc=free_pages gfp=0 path=pcp" "per-cpu lists"
	badinput_rows
	printf 'ctx=process\000alloc=get_free_page gfp=0' >/tmp/spec
	bad_spec "NUL byte" "control character 0x0"
	printf 'ctx=\377\376 alloc=get_free_page gfp=0' >/tmp/spec
	bad_spec "binary bytes" "not UTF-8"
	head -c 300 /dev/zero | tr '\0' a >/tmp/spec
	bad_spec "300-byte spec" "300 bytes"
	head -c 65536 /dev/zero | tr '\0' a >/tmp/spec
	bad_spec "64 KiB write" "65536 bytes"
	printf '2' >/tmp/spec
	err=$(dd if=/tmp/spec of="$DEBUGFS/reset" 2>&1)
	case $err in
	*"Invalid argument"*) pass "bad input to reset: EINVAL" ;;
	*) fail "bad input to reset: '2' was accepted ($err)" ;;
	esac
	printf 'now' >/tmp/spec
	err=$(dd if=/tmp/spec of="$DEBUGFS/settle" 2>&1)
	logged=$(dmesg | grep 'rust_gfp_nolocks: settle:' | tail -n 1)
	case $err/$logged in
	*"Invalid argument"*/*"write 1"*) pass "bad input to settle: EINVAL, logged what it takes" ;;
	*) fail "bad input to settle: 'now' gave '$err', log '$logged'" ;;
	esac
	rm -f /tmp/spec
}
