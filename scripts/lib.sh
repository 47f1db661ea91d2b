# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
#
# Shared by every script in scripts/: the one place that knows each path
# (cache, kernel source, build trees, results) and the message helpers.

REPO_ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
CACHE_DIR=${RGN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rust-gfp-nolocks}
# The Debian kernel sources the module is known to work with, newest last;
# KERNEL (make KERNEL=7.2, or the environment) picks one, default the newest.
SUPPORTED_KERNELS="7.2 7.3"
KERNEL_SERIES=${KERNEL:-${RGN_KERNEL_SERIES:-${SUPPORTED_KERNELS##* }}}
# ksrc_series DIR: the name a KSRC tree's runs, states and builds are kept
# under (build trees: ksrc_series-VERSION-FLAVOR-KEY), from its real path.
ksrc_series() { printf 'ksrc-%s\n' "$(printf '%s' "$1" | sha256sum | cut -c 1-10)"; }

# KSRC (make matrix KSRC=/path/to/linux): the user's own source tree instead
# of a Debian one. Its runs, states and builds are keyed by its path.
if [ -n "${KSRC:-}" ]; then
	_ksrc=$KSRC
	KSRC=$(CDPATH='' cd -- "$_ksrc" 2>/dev/null && pwd -P) || {
		printf '%s: error: KSRC=%s is not a directory: give the path of a kernel source tree\n' "${0##*/}" "$_ksrc" >&2
		exit 1
	}
	KERNEL_SERIES=$(ksrc_series "$KSRC")
	export KSRC
fi
export KERNEL="$KERNEL_SERIES"
export KERNEL_SRC_PKG="linux-source-$KERNEL_SERIES"
# Where Debian publishes kernel sources newer than bookworm's: the newest
# version among these suites is used.
export KERNEL_SRC_SUITES="trixie-backports forky sid"
# Per kernel: test runs, saved VM states and module builds.
export RUNS_DIR="$CACHE_DIR/runs/$KERNEL_SERIES"
export STATES_DIR="$CACHE_DIR/states/$KERNEL_SERIES"
export MODULES_DIR="$CACHE_DIR/module/$KERNEL_SERIES"
LLVM_SUFFIX=-19
export FLAVORS="lockdep rt"
# The guest phases a saved VM runs before it is saved (scripts/vm --save),
# once per state: the module's debugfs files and case list checked, and
# every cell of make matrix queued (per-cpu cells, the matrix, the slow
# path, in that order); run-flavor --restored takes them from there.
export PREPARED_PHASES="load queue:/rgn/selftests/pcp.specs queue:/rgn/selftests/rcu.specs cases queue:all queue:/rgn/selftests/slowpath.specs"

# The rustup toolchain lives in ~/.cargo/bin; a CI shell may not have it.
case ":$PATH:" in
*":$HOME/.cargo/bin:"*) ;;
*) PATH=$HOME/.cargo/bin:$PATH ;;
esac
export PATH

# help_if_asked ARGS: a script's --help (or -h) as its first argument prints
# its header comment, which holds its usage, and exits 0. Runs as lib.sh is
# sourced, on the script's own arguments.
help_if_asked() {
	case ${1:-} in
	-h | --help)
		sed -n '3,/^set -eu$/{/^set -eu$/d; /^#!/d; s/^# \{0,1\}//; p}' "$0"
		exit 0
		;;
	esac
}
help_if_asked "$@"

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

# now_s: seconds since the epoch with sub-second precision, for step timings.
now_s() { date +%s.%N; }

# elapsed START: seconds since START, one decimal.
elapsed() { awk -v s="$1" -v e="$(now_s)" 'BEGIN { printf "%.1f", e - s }'; }

# step NAME CMD...: runs CMD, printing one line when it starts and one with
# its duration when it ends.
step() {
	_step_name=$1
	shift
	_step_t0=$(now_s)
	log "$_step_name ..."
	"$@"
	log "$_step_name done in $(elapsed "$_step_t0") s"
}

check_flavor() {
	case $1 in -*) die "unknown option '$1' (--help prints the usage)" ;; esac
	case " $FLAVORS " in
	*" $1 "*) ;;
	*) die "unknown flavor '$1': use one of: $FLAVORS" ;;
	esac
}

# kernel_src_dir: the kernel source tree: KSRC, or the unpacked Debian one
# (set by scripts/setup).
kernel_src_dir() {
	if [ -n "${KSRC:-}" ]; then
		ksrc_check "$KSRC"
		printf '%s\n' "$KSRC"
		return
	fi
	_d=$(cat "$CACHE_DIR/src/current-$KERNEL_SERIES" 2>/dev/null) ||
		die "no $KERNEL_SRC_PKG unpacked in $CACHE_DIR/src: run scripts/setup (with KERNEL=$KERNEL_SERIES)"
	[ -f "$_d/Makefile" ] || die "kernel source $_d is incomplete: delete $CACHE_DIR/src and run scripts/setup"
	printf '%s\n' "$_d"
}

# series_version SERIES: the version of the unpacked source of a series
# (e.g. 7.2 -> 7.2.13), once scripts/setup fetched it.
series_version() {
	_d=$(cat "$CACHE_DIR/src/current-$1" 2>/dev/null) || die "no linux-source-$1 unpacked: run KERNEL=$1 scripts/setup"
	kernel_version "$_d"
}

# What the module needs of a tree's kernel crate, one "file|pattern|what"
# per line: a tree that lacks one is too old for the module (differences
# the module can live with are detected by Kbuild instead).
MODULE_NEEDS='rust/kernel/debugfs.rs|pub struct ScopedDir|scoped debugfs directories (kernel::debugfs::ScopedDir)
rust/kernel/sync/atomic.rs|pub struct Atomic<|atomics (kernel::sync::atomic::Atomic)
rust/kernel/module_param.rs|pub trait ModuleParam|module parameters (kernel::module_param)
rust/kernel/time/delay.rs|pub fn fsleep|kernel::time::delay::fsleep
rust/kernel/cpu.rs|pub struct CpuId|kernel::cpu::CpuId
rust/kernel/alloc/kvec.rs|pub type KVVec|kernel::alloc::KVVec'

# ksrc_check DIR: dies, naming what is missing, unless DIR is a clean kernel
# source tree with the Rust support the module needs. Reads DIR only.
ksrc_check() {
	{ [ -f "$1/Makefile" ] && grep -q '^VERSION = ' "$1/Makefile" && [ -f "$1/Kconfig" ]; } ||
		die "KSRC=$1 is not a kernel source tree (no top-level Makefile with a VERSION, or no Kconfig)"
	{ [ -f "$1/rust/Makefile" ] && grep -q '^config RUST$' "$1/init/Kconfig"; } ||
		die "KSRC=$1 (Linux $(kernel_version "$1")) has no Rust support (no rust/Makefile or no 'config RUST' in init/Kconfig): the module needs a tree with Rust for Linux, 7.2 or later"
	_missing=$(printf '%s\n' "$MODULE_NEEDS" | while IFS='|' read -r _file _pattern _what; do
		grep -qs -- "$_pattern" "$1/$_file" || printf ' %s (%s);' "$_what" "$_file"
	done)
	[ -z "$_missing" ] ||
		die "KSRC=$1 (Linux $(kernel_version "$1")) is too old for the module: its kernel crate lacks${_missing%;}; 7.2 or later has them"
	if [ -e "$1/.config" ] || [ -d "$1/include/config" ] || [ -d "$1/arch/x86/include/generated" ]; then
		die "KSRC=$1 holds an in-tree build (.config, include/config or arch/x86/include/generated), and kbuild builds out of tree only from a clean tree: run 'make mrproper' there yourself (it deletes that build), or give a clean checkout (git worktree add)"
	fi
}

# tree_fingerprint DIR: what a build of DIR depends on in DIR: for a git
# checkout, its commit, uncommitted changes and untracked files (names,
# sizes, times); otherwise every file's name, size and time.
tree_fingerprint() {
	if [ -n "${RGN_KSRC_ID:-}" ]; then
		# Computed once per command (prepare), so that an edit during a
		# run cannot rebuild the kernel under the run's feet.
		printf '%s\n' "$RGN_KSRC_ID"
		return
	fi
	if [ "$(git -C "$1" rev-parse --show-toplevel 2>/dev/null)" = "$1" ]; then
		# Plumbing only: diff-index neither refreshes .git/index nor
		# follows the user's diff drivers.
		git -C "$1" rev-parse -q --verify HEAD || echo unborn
		git -C "$1" diff-index -p --binary HEAD 2>/dev/null || true
		git -C "$1" ls-files -z -o --exclude-standard | (cd "$1" && xargs -0r stat -c '%n %s %Y')
	else
		(cd "$1" && find . -type f -printf '%P %s %T@\n' | LC_ALL=C sort)
	fi | sha256sum | cut -c 1-16
}

# ksrc_id: computes the KSRC tree's fingerprint once, for every script this
# command runs (exported as RGN_KSRC_ID).
ksrc_id() {
	[ -n "${KSRC:-}" ] || return 0
	[ -n "${RGN_KSRC_ID:-}" ] || RGN_KSRC_ID=$(tree_fingerprint "$KSRC")
	export RGN_KSRC_ID
}

# kernel_label: how results name the kernel: its version (7.3.4), and for
# KSRC also the tree's directory name (7.3.4-linux).
kernel_label() {
	_v=$(kernel_version "$(kernel_src_dir)")
	if [ -n "${KSRC:-}" ]; then
		_v="$_v-$(basename "$KSRC" | tr -c 'A-Za-z0-9._+\n-' '_')"
	fi
	printf '%s\n' "$_v"
}

# kernel_version DIR: the version a kernel tree's Makefile declares, e.g. 7.3.4.
kernel_version() {
	awk '/^VERSION =/ { v = $3 } /^PATCHLEVEL =/ { p = $3 } /^SUBLEVEL =/ { s = $3 }
	     END { print v "." p "." s }' "$1/Makefile"
}

toolchain_id() {
	printf '%s\n' "$(rustc --version)" "$(bindgen --version 2>/dev/null)" \
		"$(clang$LLVM_SUFFIX --version | head -n 1)"
}

# build_key FLAVOR: what a build tree depends on, hashed: kernel version,
# the fragments' contents and the toolchain versions.
build_key() {
	{
		kernel_version "$(kernel_src_dir)"
		cat "$REPO_ROOT/scripts/configs/base.config" "$REPO_ROOT/scripts/configs/$1.config"
		toolchain_id
	} | sha256sum | cut -c 1-12
}

# kdir FLAVOR: the build tree (a KDIR for out-of-tree modules) of a flavor.
# A KSRC tree has one per path, flavor and key: an edit to the tree is an
# incremental build in the same place (scripts/build-kernel).
kdir() {
	_prefix=""
	[ -z "${KSRC:-}" ] || _prefix=$KERNEL_SERIES-
	printf '%s/build/%s%s-%s-%s\n' "$CACHE_DIR" "$_prefix" "$(kernel_version "$(kernel_src_dir)")" "$1" "$(build_key "$1")"
}

export HOST_TOOL="$REPO_ROOT/host/target/release/rgn-report"
export RESTORE_TOOL="$REPO_ROOT/host/target/release/rgn-restore"

# host_judge_cmd FLAVOR SCRATCH [PHASE]: the command (for rgn-restore
# --judge) that judges a restore's raw guest output ($1) on the host as the
# guest judges a boot's: run.sh's phase PHASE (default judge; judge-onepass
# for phase onepass's block), with busybox's sh and awk (the guest's) first
# in PATH and SCRATCH for its files.
host_judge_cmd() {
	_bb=$2/bin
	mkdir -p "$_bb"
	[ -x "$_bb/awk" ] || busybox --install -s "$_bb" 2>/dev/null ||
		die "busybox --install failed: run scripts/setup (busybox-static)"
	_helpers=$(kernel_src_dir)/tools/testing/selftests/kselftest/ktap_helpers.sh
	printf '%s' "PATH='$_bb':\$PATH RGN_FLAVOR=$1 RGN_KTAP_HELPERS='$_helpers' RGN_TMP='$2' busybox sh '$REPO_ROOT/selftests/run.sh' \"${3:-judge}:\$1\""
}

# build_host_tool: HOST_TOOL and RESTORE_TOOL, from host/ (seconds when
# current).
# Fails (no exit: a background job must still mark its end) on error.
# module_sources: the module's files, relative to the repository: Kbuild,
# the crate root and the files its `mod` lines name (*.rs at the top, and
# sys/*.rs, the FFI corner's own files).
module_sources() {
	(
		cd "$REPO_ROOT" || exit 1
		for f in Kbuild task_offsets.c ./*.rs sys/*.rs; do
			f=${f#./}
			# Generated by Kbuild when the module is built in the repository.
			[ "$f" = task_offsets.rs ] || echo "$f"
		done
	)
}

build_host_tool() {
	cargo build -q --release --manifest-path "$REPO_ROOT/host/Cargo.toml" && return
	log "error: building host/ failed: run 'cargo build --release' in host/ to see why"
	return 1
}

# prepare FLAVOR...: what the README's commands need before they boot, from
# a fresh machine: packages and sources, the kernels, the host tool (the
# module is built by scripts/run-flavor, which needs its path anyway). Each
# step is a no-op when its result is already there.
prepare() {
	"$REPO_ROOT/scripts/setup"
	ksrc_id
	for _f in "$@"; do
		"$REPO_ROOT/scripts/build-kernel" "$_f" >/dev/null
	done
	step "host tool (cargo build)" build_host_tool || exit 1
}

# kill_tree PID: TERM to PID and every process under it. Background jobs of a script ignore SIGINT (no job control), and so
# do their children: an interrupted script must stop them itself.
kill_tree() {
	# Stopped first, so that it cannot start a new child once one of
	# its children is gone; TERM takes effect when it continues.
	kill -STOP "$1" 2>/dev/null || return 0
	for _child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$_child"; done
	kill -TERM "$1" 2>/dev/null || true
	kill -CONT "$1" 2>/dev/null || true
}

# stop_on_interrupt PIDS: on INT or TERM, kill_tree each of PIDS and exit
# 130 (call again with "" once they are done).
stop_on_interrupt() {
	if [ -z "$1" ]; then
		trap - INT TERM
		return
	fi
	# shellcheck disable=SC2064 # the PIDs of now
	trap "for _p in $1; do kill_tree \$_p; done; log 'interrupted: stopped the jobs'; exit 130" INT TERM
}

# for_each_flavor_parallel FLAVORS CMD...: runs CMD FLAVOR for every flavor at
# once (a VM waiting on the HZ rate limit leaves the CPU to the other); fails
# if any failed.
for_each_flavor_parallel() {
	_flavors=$1
	shift
	_pids=""
	for _f in $_flavors; do
		"$@" "$_f" &
		_pids="$_pids $!"
	done
	stop_on_interrupt "$_pids"
	_failed=0
	for _p in $_pids; do
		wait "$_p" || _failed=1
	done
	stop_on_interrupt ""
	return "$_failed"
}

# parse_flavors ARGS: sets FLAVOR_LIST from "--flavor F" options (default: all).
parse_flavors() {
	FLAVOR_LIST=""
	while [ $# -gt 0 ]; do
		case $1 in
		--flavor)
			[ $# -ge 2 ] || die "--flavor needs one of: $FLAVORS"
			check_flavor "$2"
			FLAVOR_LIST="$FLAVOR_LIST $2"
			shift
			;;
		*) die "unknown argument '$1' (only --flavor FLAVOR, repeatable; --help prints the usage)" ;;
		esac
		shift
	done
	[ -n "$FLAVOR_LIST" ] || FLAVOR_LIST=$FLAVORS
}

# boot_outputs RUN_DIR: the guest outputs of a scripts/run-flavor run, in order.
boot_outputs() {
	[ -f "$1/boots.list" ] || die "$1 holds no finished run"
	cat "$1/boots.list"
}

# unmatched_rows FLAVOR RUN_DIR: the rows of selftests/expectations.txt that
# apply to FLAVOR and to this kernel, and matched no cell in any boot of the
# run (the guest prints "# ROW N" for the row each judged cell matched). A
# row no cell reaches is dead: shadowed by an earlier row, or its cells were
# dropped. A row for a context or allocator this kernel lacks (absent from
# the guest's "# CASE" lines, which come from the kernel) does not apply.
unmatched_rows() {
	boot_outputs "$2" | while read -r _f; do sed -n 's/^# ROW //p' "$_f"; done | sort -u >"$2/rows.hit"
	boot_outputs "$2" | while read -r _f; do sed -n 's/^# CASE //p' "$_f"; done | tr ' ' '\n' |
		sed -n 's/^\(ctx\|alloc\|control\)=//p' | sort -u >"$2/rows.names"
	awk -v flavor="$1" '
		FILENAME == ARGV[1] { hit[$1] = 1; next }
		FILENAME == ARGV[2] { name[$1] = 1; next }
		/^[ \t]*(#|$)/ { next }
		{ rows++ }
		($2 != "*" && $2 != "control" && !($2 in name)) || ($3 != "*" && !($3 in name)) { next }
		($1 == "*" || $1 == flavor) && !(rows in hit) { printf " %d (%s %s %s %s %s)", rows, $2, $3, $4, $5, $6 }
	' "$2/rows.hit" "$2/rows.names" "$REPO_ROOT/selftests/expectations.txt"
}

# incomplete_outputs RUN_DIR: the guest outputs of a run that stop before
# run.sh's last line ("# phase end"): a guest that died or a shell that
# aborted part of the way. Their missing tests count as failures.
incomplete_outputs() {
	boot_outputs "$1" | while read -r _f; do
		case $_f in *.failed) continue ;; esac
		grep -q '^# phase end at ' "$_f" || printf ' %s' "$_f"
	done
}

# cell_verdicts RUN_DIR: the KTAP result lines of every boot of a run.
cell_verdicts() {
	boot_outputs "$1" | while read -r _f; do grep -E '^(ok|not ok) [0-9]+ ' "$_f" || true; done
}
