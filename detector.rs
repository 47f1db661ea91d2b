// SPDX-License-Identifier: GPL-2.0

//! The detector: kernel reports seen synchronously on the `console`
//! tracepoint, the page allocator's trips through `zone->lock` seen on
//! `mm_page_alloc_zone_locked` and `mm_page_alloc_extfrag`, and kswapd
//! wakeups (a `spinlock_t` wait queue) seen on `mm_vmscan_wakeup_kswapd`,
//! each counted for the running cell only when the cell did it.

use crate::sys::{self, ExecContext};
use core::ffi::{c_char, c_int, c_uint, c_void};
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

/// No CPU: the running cell's body is not in a hard interrupt right now.
const NO_CPU: u32 = u32::MAX;

/// State shared with the tracepoint probes: atomics only, since probes run
/// in any context with preemption off.
pub(crate) struct Detector {
    /// `task_struct` of the running cell, or 0 when no cell runs.
    runner: Atomic<usize>,
    /// Whether the running cell's body runs in hard interrupt context.
    hardirq_cell: Atomic<bool>,
    /// CPU whose hard interrupt handler is running the cell's body, or
    /// `NO_CPU`. Hard interrupts do not nest: on that CPU, in hard irq
    /// context, only the handler itself can print.
    hardirq_cpu: Atomic<u32>,
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
    after_rule: Atomic<bool>,
    /// `jiffies` of the last "sleeping function called" report, from any task:
    /// `__might_resched()` prints at most once per HZ, system-wide.
    pub(crate) last_sleep_report: Atomic<usize>,
    /// Reports printed while a cell ran by anyone but the cell: another
    /// task, or an interrupt, softirq or NMI on the cell's CPU.
    pub(crate) unattributed: Atomic<u64>,
    /// The same, for the running cell only.
    cell_unattributed: Atomic<u64>,
}

/// What one cell's detector saw.
pub(crate) struct Observed {
    pub(crate) reports: [u64; 5],
    pub(crate) unattributed: u64,
}

impl Detector {
    pub(crate) fn new() -> Self {
        Self {
            runner: Atomic::new(0),
            hardirq_cell: Atomic::new(false),
            hardirq_cpu: Atomic::new(NO_CPU),
            reports: [const { Atomic::new(0) }; 5],
            zone_locked: Atomic::new(0),
            extfrag: Atomic::new(0),
            kswapd_wakeups: Atomic::new(0),
            alloc_warnings: Atomic::new(0),
            after_rule: Atomic::new(false),
            last_sleep_report: Atomic::new(sys::jiffies()),
            unattributed: Atomic::new(0),
            cell_unattributed: Atomic::new(0),
        }
    }

    fn cell_running(&self) -> bool {
        self.runner.load(Relaxed) != 0
    }

    /// Whether what is being printed or allocated right now belongs to the
    /// running cell: its body in hard irq on the handler's CPU, or else its
    /// task in task context (an interrupt, softirq or NMI landing on the
    /// task's CPU is not the cell).
    fn attributed(&self) -> bool {
        if !self.cell_running() {
            return false;
        }
        let context = sys::exec_context();
        if self.hardirq_cell.load(Relaxed) {
            context == ExecContext::Hardirq && self.hardirq_cpu.load(Relaxed) == sys::current_cpu()
        } else {
            context == ExecContext::Task && self.runner.load(Relaxed) == sys::current_task()
        }
    }

    fn on_console(&self, line: &[u8]) {
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
    }

    fn on_event(&self, counter: &Atomic<u64>) {
        if self.attributed() {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Starts observing a cell run by the calling task; `hardirq`: its body
    /// runs in a hard interrupt (see [`Detector::body`]).
    pub(crate) fn begin(&self, hardirq: bool) {
        for r in &self.reports {
            r.store(0, Relaxed);
        }
        self.zone_locked.store(0, Relaxed);
        self.extfrag.store(0, Relaxed);
        self.kswapd_wakeups.store(0, Relaxed);
        self.alloc_warnings.store(0, Relaxed);
        self.cell_unattributed.store(0, Relaxed);
        self.after_rule.store(false, Relaxed);
        self.hardirq_cell.store(hardirq, Relaxed);
        self.hardirq_cpu.store(NO_CPU, Relaxed);
        self.runner.store(sys::current_task(), Relaxed);
    }

    /// Runs the cell's body `f` where the context put it, marking the CPU
    /// for the duration when that is a hard interrupt handler.
    pub(crate) fn body(&self, f: &mut dyn FnMut()) {
        let hardirq = self.hardirq_cell.load(Relaxed);
        if hardirq {
            self.hardirq_cpu.store(sys::current_cpu(), Relaxed);
        }
        f();
        if hardirq {
            self.hardirq_cpu.store(NO_CPU, Relaxed);
        }
    }

    /// Buddy-list trips of the running cell so far.
    pub(crate) fn buddy_events(&self) -> u64 {
        self.zone_locked.load(Relaxed) + self.extfrag.load(Relaxed)
    }

    pub(crate) fn end(&self) -> Observed {
        self.runner.store(0, Relaxed);
        Observed {
            reports: core::array::from_fn(|i| self.reports[i].load(Relaxed)),
            unattributed: self.cell_unattributed.load(Relaxed),
        }
    }
}

/// Probes get their `Detector` back from the registration's data pointer.
///
/// # Safety
///
/// `data` must be the `Detector` registered with the probe, alive until the
/// probe is detached (the module drops its probes before its state).
unsafe fn detector<'a>(data: *mut c_void) -> &'a Detector {
    // SAFETY: Guaranteed by the caller.
    unsafe { &*data.cast::<Detector>() }
}

/// Probe on the `console` tracepoint.
///
/// # Safety
///
/// `data` as in [`detector`], and `text` must point to `len` bytes.
pub(crate) unsafe extern "C" fn console_probe(data: *mut c_void, text: *const c_char, len: usize) {
    // SAFETY: `data` is the registered `Detector`; the tracepoint passes
    // `len` readable bytes.
    let (detector, line) = unsafe { (detector(data), sys::console_text(text, len)) };
    detector.on_console(line);
}

/// Probe on `mm_page_alloc_zone_locked`, which fires under `zone->lock`.
///
/// # Safety
///
/// `data` as in [`detector`].
pub(crate) unsafe extern "C" fn zone_locked_probe(
    data: *mut c_void,
    _page: *mut bindings::page,
    _order: c_uint,
    _migratetype: c_int,
    _percpu_refill: c_int,
) {
    // SAFETY: `data` is the registered `Detector`.
    let d = unsafe { detector(data) };
    d.on_event(&d.zone_locked);
}

/// Probe on `mm_page_alloc_extfrag`, which fires under `zone->lock` when a
/// block is claimed or stolen from another migratetype.
///
/// # Safety
///
/// `data` as in [`detector`].
pub(crate) unsafe extern "C" fn extfrag_probe(
    data: *mut c_void,
    _page: *mut bindings::page,
    _alloc_order: c_int,
    _fallback_order: c_int,
    _alloc_migratetype: c_int,
    _fallback_migratetype: c_int,
) {
    // SAFETY: `data` is the registered `Detector`.
    let d = unsafe { detector(data) };
    d.on_event(&d.extfrag);
}

/// Probe on `mm_vmscan_wakeup_kswapd`, which fires just before
/// `wake_up_interruptible(&pgdat->kswapd_wait)`.
///
/// # Safety
///
/// `data` as in [`detector`].
pub(crate) unsafe extern "C" fn wakeup_kswapd_probe(
    data: *mut c_void,
    _nid: c_int,
    _zid: c_int,
    _order: c_int,
    _gfp: bindings::gfp_t,
) {
    // SAFETY: `data` is the registered `Detector`.
    let d = unsafe { detector(data) };
    d.on_event(&d.kswapd_wakeups);
}
