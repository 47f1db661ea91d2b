// SPDX-License-Identifier: GPL-2.0

//! The detector: kernel reports seen synchronously on the `console`
//! tracepoint, the page allocator's trips through `zone->lock` seen on
//! `mm_page_alloc_zone_locked` and `mm_page_alloc_extfrag`, and kswapd
//! wakeups (a `spinlock_t` wait queue) seen on `mm_vmscan_wakeup_kswapd`,
//! each counted for the running cell only when the cell did it.

use crate::locktrace::LockTrace;
use crate::sys::{self, lockdep::MapRef, ExecContext};
use crate::text::{Name, TextSlot};
use kernel::{
    bindings,
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

/// Report kinds, in the order of the counters and of the results line;
/// also the names of the debugfs counters.
pub(crate) const REPORT_KINDS: [&CStr; 5] = [
    c"invalid_wait_context",
    c"sleeping_in_atomic",
    c"scheduling_while_atomic",
    c"lockdep_other",
    c"warning",
];
/// The tables' symbol of each report kind, in `REPORT_KINDS` order: every
/// results line names the kinds with them (`kinds=`), so the judge and
/// `rgn-report` take both from the module.
pub(crate) const REPORT_SYMBOLS: [char; 5] = ['W', 'S', 'A', 'L', '!'];
const INVALID_WAIT_CONTEXT: usize = 0;
const SLEEPING_IN_ATOMIC: usize = 1;
const SCHEDULING_WHILE_ATOMIC: usize = 2;
const LOCKDEP_OTHER: usize = 3;
const WARNING: usize = 4;

/// Classifies one printk record. `after_rule`: the previous record of this
/// context was a `=====` line, which lockdep prints before each report header.
fn classify(line: &[u8], after_rule: bool) -> Option<usize> {
    let line = line.trim_ascii_start();
    if line.starts_with(b"[ BUG: Invalid wait context ]") {
        Some(INVALID_WAIT_CONTEXT)
    } else if line.starts_with(b"BUG: sleeping function called from invalid context") {
        Some(SLEEPING_IN_ATOMIC)
    } else if line.starts_with(b"BUG: scheduling while atomic") {
        Some(SCHEDULING_WHILE_ATOMIC)
    } else if after_rule
        && (line.starts_with(b"WARNING:")
            || line.starts_with(b"BUG:")
            || line.starts_with(b"[ BUG:"))
    {
        Some(LOCKDEP_OTHER)
    } else if line.starts_with(b"WARNING:") || line.starts_with(b"BUG:") {
        Some(WARNING)
    } else {
        None
    }
}

fn contains(line: &[u8], needle: &[u8]) -> bool {
    line.windows(needle.len()).any(|w| w == needle)
}

fn is_rule(line: &[u8]) -> bool {
    line.len() >= 8 && line.iter().all(|&b| b == b'=')
}

/// Where the capture of the first report's lock stands.
mod capture {
    /// Waiting for the cell's first report.
    pub(super) const IDLE: u32 = 0;
    /// A lockdep report: waiting for the line that names the lock
    /// ("... is trying to lock:", "... takes:").
    pub(super) const LOCKDEP_HEADER: u32 = 1;
    /// `print_lock()`: the instance, then " (", the class name, "){...}",
    /// then ", at: SITE+off/len", each its own printk fragment.
    pub(super) const LOCK_OPEN: u32 = 2;
    pub(super) const LOCK_NAME: u32 = 3;
    pub(super) const LOCK_AT: u32 = 4;
    /// A sleeping-in-atomic report from an rtlock: waiting in the call
    /// trace for the `rt_*lock*` frame, then for its caller.
    pub(super) const RT_FRAME: u32 = 5;
    pub(super) const RT_SITE: u32 = 6;
    /// Captured, or given up: the first report only.
    pub(super) const DONE: u32 = 7;
}

/// The function of a call trace line (" ? rt_spin_lock+0x59/0x1d0").
fn frame_function(line: &[u8]) -> Option<&[u8]> {
    let line = line.trim_ascii();
    let line = line.strip_prefix(b"? ").unwrap_or(line);
    let plus = line.iter().position(|&b| b == b'+')?;
    let name = &line[..plus];
    (!name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'))
    .then_some(name)
}

/// Whether a frame of an unreliable call trace (the test kernels have no
/// frame pointers or ORC, so most frames are "? " guesses) may be the
/// caller of the `rt_*lock*` frame before it: stale return addresses of
/// this module (its probes) and of lockdep, RCU and printk helpers, which
/// the lock itself calls, are skipped.
fn plausible_caller(function: &[u8], line: &[u8]) -> bool {
    const HELPERS: [&[u8]; 10] = [
        b"rt_",
        b"lock_",
        b"__lock_",
        b"mark_",
        b"find_held_lock",
        b"rcu_",
        b"vprintk",
        b"printk",
        b"_raw_spin",
        b"debug_",
    ];
    !contains(line, b"[rust_gfp_nolocks]") && !HELPERS.iter().any(|h| function.starts_with(h))
}

/// No CPU: the running cell's body is not in a hard interrupt right now.
const NO_CPU: u32 = u32::MAX;

/// `Detector::sleep_report`: the report's header names the check's file,
/// `kernel/locking/spinlock_rt.c` for an rtlock, another for `might_sleep()`.
const SLEEP_REPORT_MIGHT_SLEEP: u32 = 1;
const SLEEP_REPORT_RTLOCK: u32 = 2;

/// State shared with the tracepoint probes: atomics only, since probes run
/// in any context with preemption off.
pub(crate) struct Detector {
    /// `task_struct` of the running cell, or 0 when no cell runs.
    runner: Atomic<usize>,
    /// Where the running cell's body runs (`ExecContext as u32`).
    body_in: Atomic<u32>,
    /// CPU whose interrupt context is running the cell's body, or `NO_CPU`.
    /// Hard interrupts do not nest: on that CPU, in hard irq context, only
    /// the handler itself can print. A softirq may share its context with
    /// other softirqs that the same `do_softirq()` serves.
    body_cpu: Atomic<u32>,
    /// Whether a softirq body was served by a task other than the cell's
    /// (a softirq daemon): on PREEMPT_RT its reports are then not the cell's.
    body_elsewhere: Atomic<bool>,
    /// Whether the context ran the cell's body at all.
    body_ran: Atomic<bool>,
    reports: [Atomic<u64>; 5],
    /// Pages the cell took from the buddy lists under `zone->lock`
    /// (`__rmqueue_smallest()`).
    pub(crate) zone_locked: Atomic<u64>,
    /// Blocks claimed or stolen from another migratetype under `zone->lock`
    /// (`__rmqueue_claim()`, `__rmqueue_steal()`), which do not fire
    /// `mm_page_alloc_zone_locked` for a whole-pageblock claim or a steal.
    pub(crate) extfrag: Atomic<u64>,
    /// kswapd wakeups: `wakeup_kswapd()` fires the event just before it
    /// takes the wait queue's `spinlock_t`. The per-cpu path does this too
    /// when the zone's watermark is boosted (`ZONE_BOOSTED_WATERMARK`).
    pub(crate) kswapd_wakeups: Atomic<u64>,
    /// `warn_alloc()`'s "page allocation failure" lines.
    pub(crate) alloc_warnings: Atomic<u64>,
    /// Pages `free_pcppages_bulk()` gave back to the buddy lists under
    /// `zone->lock` (`mm_page_pcpu_drain`): a per-cpu list past its high mark.
    pub(crate) pcpu_drained: Atomic<u64>,
    /// Every page `free_pcppages_bulk()` drained, in or out of a cell, by
    /// any task: a per-cpu warm-up checks that its pages stayed listed.
    pub(crate) pcpu_drained_total: Atomic<u64>,
    /// Pages the cell's body got from the page allocator (`mm_page_alloc`,
    /// per-cpu list or buddy lists): for a slab row, a new slab.
    pub(crate) page_allocs: Atomic<u64>,
    /// Pages the cell's body gave back to the page allocator
    /// (`mm_page_free`): for a slab row, a slab discarded.
    pub(crate) page_frees: Atomic<u64>,
    /// Slab objects the cell's body got from `kmalloc()` and friends
    /// (`kmalloc`): for a `kfree_rcu()` row, a new sheaf.
    pub(crate) kmallocs: Atomic<u64>,
    /// High-resolution timers the cell's body started (`hrtimer_start`):
    /// for a `kfree_rcu()` row on the bulk path, the page cache's refill.
    pub(crate) hrtimer_starts: Atomic<u64>,
    after_rule: Atomic<bool>,
    /// `jiffies` of the last "sleeping function called" report, from any task:
    /// `__might_resched()` prints at most once per HZ, system-wide.
    pub(crate) last_sleep_report: Atomic<usize>,
    /// Reports printed while a cell ran by anyone but the cell: another
    /// task, or an interrupt, softirq or NMI on the cell's CPU.
    pub(crate) unattributed: Atomic<u64>,
    /// The same, for the running cell only.
    cell_unattributed: Atomic<u64>,
    /// The lock behind the cell's first report: lockdep's class name, or
    /// `rtlock` (a sleeping lock on PREEMPT_RT, from the call trace), or
    /// `might_sleep` (no lock: a sleep check).
    capture: Atomic<u32>,
    /// What the cell's first sleeping-in-atomic report checked, whatever
    /// came before it: `SLEEP_REPORT_MIGHT_SLEEP` (a `might_sleep()`) or
    /// `SLEEP_REPORT_RTLOCK` (`rtlock_might_resched()`), 0 for none.
    sleep_report: Atomic<u32>,
    lock: TextSlot,
    /// Where it was taken: lockdep's "at:" function, the caller of the
    /// `rt_*lock*` frame, or the sleep check's FILE:LINE.
    lock_at: TextSlot,
    /// Every lock the cell's own context takes inside the section.
    pub(crate) locks: LockTrace,
    /// The section is open: its locks are traced.
    tracing_locks: Atomic<bool>,
}

/// What one cell's detector saw.
pub(crate) struct Observed {
    pub(crate) reports: [u64; 5],
    /// The cell's first sleep report: `might_sleep`, `rtlock` or `-`.
    pub(crate) sleep_report: &'static str,
    pub(crate) unattributed: u64,
    pub(crate) lock: Name,
    pub(crate) lock_at: Name,
}

impl Detector {
    pub(crate) fn new() -> Self {
        Self {
            runner: Atomic::new(0),
            body_in: Atomic::new(ExecContext::Task as u32),
            body_cpu: Atomic::new(NO_CPU),
            body_elsewhere: Atomic::new(false),
            body_ran: Atomic::new(false),
            reports: [const { Atomic::new(0) }; 5],
            zone_locked: Atomic::new(0),
            extfrag: Atomic::new(0),
            kswapd_wakeups: Atomic::new(0),
            alloc_warnings: Atomic::new(0),
            pcpu_drained: Atomic::new(0),
            pcpu_drained_total: Atomic::new(0),
            page_allocs: Atomic::new(0),
            page_frees: Atomic::new(0),
            kmallocs: Atomic::new(0),
            hrtimer_starts: Atomic::new(0),
            after_rule: Atomic::new(false),
            last_sleep_report: Atomic::new(sys::jiffies()),
            unattributed: Atomic::new(0),
            cell_unattributed: Atomic::new(0),
            capture: Atomic::new(capture::IDLE),
            sleep_report: Atomic::new(0),
            lock: TextSlot::new(),
            lock_at: TextSlot::new(),
            locks: LockTrace::new(),
            tracing_locks: Atomic::new(false),
        }
    }

    fn cell_running(&self) -> bool {
        self.runner.load(Relaxed) != 0
    }

    /// Whether what is being printed or allocated right now belongs to the
    /// running cell: its task in task context (an interrupt, softirq or NMI
    /// landing on the task's CPU is not the cell), or its body in the
    /// interrupt context it runs in, on that CPU. A softirq body counts
    /// both: on PREEMPT_RT the serving task runs softirqs in task context.
    fn attributed(&self) -> bool {
        if !self.cell_running() {
            return false;
        }
        let context = sys::exec_context();
        let in_task =
            || context == ExecContext::Task && self.runner.load(Relaxed) == sys::current_task();
        let in_body = || {
            context as u32 == self.body_in.load(Relaxed)
                && self.body_cpu.load(Relaxed) == sys::current_cpu()
        };
        match ExecContext::from_u32(self.body_in.load(Relaxed)) {
            ExecContext::Task => in_task(),
            ExecContext::Softirq => in_task() || in_body(),
            ExecContext::Hardirq | ExecContext::Nmi => in_body(),
        }
    }

    pub(crate) fn on_console(&self, line: &[u8]) {
        let mine = self.attributed();
        let kind = classify(line, mine && self.after_rule.load(Relaxed));
        if kind == Some(SLEEPING_IN_ATOMIC) {
            self.last_sleep_report.store(sys::jiffies(), Relaxed);
        }
        if !mine {
            if kind.is_some() && self.cell_running() {
                self.unattributed.fetch_add(1, Relaxed);
                self.cell_unattributed.fetch_add(1, Relaxed);
            }
            return;
        }
        self.after_rule.store(is_rule(line), Relaxed);
        if contains(line, b"page allocation failure: order:") {
            self.alloc_warnings.fetch_add(1, Relaxed);
        }
        if let Some(kind) = kind {
            self.reports[kind].fetch_add(1, Relaxed);
        }
        if kind == Some(SLEEPING_IN_ATOMIC) && self.sleep_report.load(Relaxed) == 0 {
            let checked = if contains(line, b"kernel/locking/spinlock_rt.c") {
                SLEEP_REPORT_RTLOCK
            } else {
                SLEEP_REPORT_MIGHT_SLEEP
            };
            self.sleep_report.store(checked, Relaxed);
        }
        self.capture_lock(line, kind);
    }

    /// Follows the cell's first report to the lock it names (see
    /// [`capture`]). Lockdep prints the lock of `print_lock()` in
    /// fragments; a PREEMPT_RT sleep report names no lock, but its call
    /// trace shows the `rt_*lock*` frame and its caller.
    fn capture_lock(&self, line: &[u8], kind: Option<usize>) {
        let state = self.capture.load(Relaxed);
        let next = match (state, kind) {
            // A second report before the first named its lock: stop there.
            (s, Some(_)) if s != capture::IDLE && s != capture::DONE => capture::DONE,
            (capture::IDLE, Some(INVALID_WAIT_CONTEXT | LOCKDEP_OTHER)) => capture::LOCKDEP_HEADER,
            (capture::IDLE, Some(SLEEPING_IN_ATOMIC)) => {
                if contains(line, b"kernel/locking/spinlock_rt.c") {
                    self.lock.push(b"rtlock");
                    capture::RT_FRAME
                } else {
                    self.lock.push(b"might_sleep");
                    if let Some(at) = line.windows(4).position(|w| w == b" at ") {
                        let place = &line[at + 4..];
                        let file = place.rsplit(|&b| b == b'/').next().unwrap_or(place);
                        self.lock_at.push(file.trim_ascii());
                    }
                    capture::DONE
                }
            }
            (capture::IDLE, Some(_)) => capture::DONE,
            (capture::LOCKDEP_HEADER, _) => {
                let line = line.trim_ascii_end();
                if line.ends_with(b" is trying to lock:")
                    || line.ends_with(b" takes:")
                    || line.ends_with(b" is trying to acquire lock:")
                    || line.ends_with(b" is trying to acquire:")
                    || line.ends_with(b" just changed the state of lock:")
                {
                    capture::LOCK_OPEN
                } else {
                    state
                }
            }
            (capture::LOCK_OPEN, _) if line == b" (" => capture::LOCK_NAME,
            (capture::LOCK_NAME, _) if line.starts_with(b"){") => capture::LOCK_AT,
            (capture::LOCK_NAME, _) => {
                self.lock.push(line);
                state
            }
            (capture::LOCK_AT, _) => {
                if let Some(site) = line.strip_prefix(b", at: ") {
                    let end = site.iter().position(|&b| b == b'+').unwrap_or(site.len());
                    self.lock_at.push(&site[..end]);
                }
                capture::DONE
            }
            (capture::RT_FRAME, _) => match frame_function(line) {
                // Acquisitions only: stale unlock frames are common in a
                // trace without frame pointers.
                Some(f)
                    if f.starts_with(b"rt_spin_lock")
                        || f == b"rt_read_lock"
                        || f == b"rt_write_lock" =>
                {
                    capture::RT_SITE
                }
                _ => state,
            },
            (capture::RT_SITE, _) => match frame_function(line) {
                Some(f) if !plausible_caller(f, line) => state,
                Some(f) => {
                    self.lock_at.push(f);
                    capture::DONE
                }
                None => state,
            },
            _ => state,
        };
        if next != state {
            self.capture.store(next, Relaxed);
        }
    }

    /// Counts an event of the running cell's (see [`Detector::attributed`]).
    pub(crate) fn on_event(&self, counter: &Atomic<u64>) {
        if self.attributed() {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// A page `free_pcppages_bulk()` drained: every one, and the cell's.
    pub(crate) fn on_pcpu_drain(&self) {
        self.pcpu_drained_total.fetch_add(1, Relaxed);
        self.on_event(&self.pcpu_drained);
    }

    /// A page allocation; the event fires for failed ones too.
    pub(crate) fn on_page_alloc(&self, got: bool) {
        if got {
            self.on_event(&self.page_allocs);
        }
    }

    /// A `kmalloc()`; the event fires for failed ones too.
    pub(crate) fn on_kmalloc(&self, got: bool) {
        if got {
            self.on_event(&self.kmallocs);
        }
    }

    /// A high-resolution timer started. Counted: a relative timer not
    /// already queued, as `run_page_cache_worker()` starts its own
    /// (`HRTIMER_MODE_REL`); the scheduler's timers that may start on the
    /// cell's task (hrtick, a deadline server's) are absolute and hard.
    pub(crate) fn on_hrtimer_start(&self, mode: u32, was_armed: bool) {
        if mode == bindings::hrtimer_mode_HRTIMER_MODE_REL && !was_armed {
            self.on_event(&self.hrtimer_starts);
        }
    }

    /// Starts observing a cell run by the calling task, whose body runs in
    /// `body_in` (see [`Detector::body`]).
    pub(crate) fn begin(&self, body_in: ExecContext) {
        for r in &self.reports {
            r.store(0, Relaxed);
        }
        self.zone_locked.store(0, Relaxed);
        self.extfrag.store(0, Relaxed);
        self.kswapd_wakeups.store(0, Relaxed);
        self.alloc_warnings.store(0, Relaxed);
        self.pcpu_drained.store(0, Relaxed);
        self.page_allocs.store(0, Relaxed);
        self.page_frees.store(0, Relaxed);
        self.kmallocs.store(0, Relaxed);
        self.hrtimer_starts.store(0, Relaxed);
        self.capture.store(capture::IDLE, Relaxed);
        self.sleep_report.store(0, Relaxed);
        self.lock.clear();
        self.lock_at.clear();
        self.locks.clear();
        self.tracing_locks.store(false, Relaxed);
        self.cell_unattributed.store(0, Relaxed);
        self.after_rule.store(false, Relaxed);
        self.body_in.store(body_in as u32, Relaxed);
        self.body_cpu.store(NO_CPU, Relaxed);
        self.body_elsewhere.store(false, Relaxed);
        self.body_ran.store(false, Relaxed);
        self.runner.store(sys::current_task(), Relaxed);
    }

    /// Traces the locks taken while `f` runs: the section, from entering
    /// its context to leaving it.
    pub(crate) fn trace_locks(&self, f: &mut dyn FnMut()) {
        self.tracing_locks.store(true, Relaxed);
        f();
        self.tracing_locks.store(false, Relaxed);
    }

    /// Lockdep's irq contexts (`task_irq_context()`: 0 task, 1 softirq, 2
    /// hard irq, a bit each) the body's own acquisitions come in: a softirq
    /// body's task enters it from task context; lockdep checks nothing in
    /// NMI (`lockdep_off()`), where every context counts.
    fn lockdep_irq_contexts(&self) -> u8 {
        match ExecContext::from_u32(self.body_in.load(Relaxed)) {
            ExecContext::Task => 1 << 0,
            ExecContext::Softirq => (1 << 0) | (1 << 1),
            ExecContext::Hardirq => (1 << 2) | (1 << 3),
            ExecContext::Nmi => 0xf,
        }
    }

    pub(crate) fn on_lock_acquire(&self, map: MapRef<'_>, trylock: bool, read: u8, ip: usize) {
        if self.tracing_locks.load(Relaxed) && self.attributed() {
            let contexts = self.lockdep_irq_contexts();
            self.locks.on_acquire(map, (trylock, read), ip, contexts);
        }
    }

    pub(crate) fn on_lock_release(&self, map: MapRef<'_>) {
        if self.tracing_locks.load(Relaxed) && self.attributed() {
            self.locks.on_release(map, self.lockdep_irq_contexts());
        }
    }

    /// Runs the cell's body `f` where the context put it, marking the CPU
    /// for the duration when that is an interrupt context.
    pub(crate) fn body(&self, f: &mut dyn FnMut()) {
        self.body_ran.store(true, Relaxed);
        let body_in = ExecContext::from_u32(self.body_in.load(Relaxed));
        if body_in == ExecContext::Task {
            f();
            return;
        }
        if body_in == ExecContext::Softirq && sys::current_task() != self.runner.load(Relaxed) {
            self.body_elsewhere.store(true, Relaxed);
        }
        self.body_cpu.store(sys::current_cpu(), Relaxed);
        f();
        self.body_cpu.store(NO_CPU, Relaxed);
    }

    /// Whether the running cell's body ran.
    pub(crate) fn body_ran(&self) -> bool {
        self.body_ran.load(Relaxed)
    }

    /// Whether the running cell's softirq body was served by another task.
    pub(crate) fn body_elsewhere(&self) -> bool {
        self.body_elsewhere.load(Relaxed)
    }

    /// Buddy-list trips of the running cell so far.
    /// Whether the running cell printed a report so far.
    pub(crate) fn reported(&self) -> bool {
        self.reports.iter().any(|r| r.load(Relaxed) > 0)
    }

    pub(crate) fn buddy_events(&self) -> u64 {
        self.zone_locked.load(Relaxed) + self.extfrag.load(Relaxed)
    }

    pub(crate) fn end(&self) -> Observed {
        self.runner.store(0, Relaxed);
        Observed {
            reports: core::array::from_fn(|i| self.reports[i].load(Relaxed)),
            sleep_report: match self.sleep_report.load(Relaxed) {
                SLEEP_REPORT_MIGHT_SLEEP => "might_sleep",
                SLEEP_REPORT_RTLOCK => "rtlock",
                _ => "-",
            },
            unattributed: self.cell_unattributed.load(Relaxed),
            lock: self.lock.get(),
            lock_at: self.lock_at.get(),
        }
    }
}
