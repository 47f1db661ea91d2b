// SPDX-License-Identifier: GPL-2.0

//! A cell's result: what its run observed, the results line it prints, and
//! the debugfs counters that total them.

use crate::detector::{Observed, REPORT_KINDS, REPORT_SYMBOLS};
use crate::locktrace::LockRecord;
use crate::spec::Cell;
use crate::sys::{self, lockdep::ContextState};
use crate::tables::{ALLOCATORS, CONTEXTS, MASKS};
use core::fmt;
use kernel::sync::atomic::{Atomic, Relaxed};

#[derive(Clone, Copy, Default)]
pub(crate) struct Stats {
    pub(crate) min: u64,
    pub(crate) median: u64,
    pub(crate) max: u64,
}

impl Stats {
    pub(crate) fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        Self {
            min: samples[0],
            median: samples[samples.len() / 2],
            max: samples[samples.len() - 1],
        }
    }
}

/// Whether the cell ran, or was refused before its section.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ran,
    /// A blocking mask in an atomic context, with too little memory for it
    /// to stay clear of direct reclaim.
    RefusedLowMemory,
}

pub(crate) struct CellResult {
    pub(crate) cell: Cell,
    pub(crate) outcome: Outcome,
    /// `zone_lock`: the buddy lists served at least one allocation under
    /// `zone->lock`; `pcp`: none did, all came from the per-cpu list;
    /// `unseen`: an order the per-cpu lists never serve came back without
    /// any buddy-list tracepoint (should not happen); `none`: nothing was
    /// allocated, or a control.
    pub(crate) path: &'static str,
    pub(crate) iterations: u32,
    pub(crate) allocated: u32,
    pub(crate) failed: u32,
    /// Runs of a `path=pcp` cell (more than one when its task migrated).
    pub(crate) attempts: u32,
    /// Whether the last run left the CPU whose per-cpu list it filled.
    pub(crate) migrated: bool,
    /// Why this observation does not answer the cell, though it ran: the
    /// state it needed was not there (`path=slowpath`: a zone above its min
    /// watermark, kswapd awake or hopeless), or the kernel's allocation
    /// failure warning was spent (`warn_alloc()` prints once per 10 s).
    /// The cell must run again from a fresh state.
    pub(crate) unsettled: Option<&'static str>,
    /// "page allocation failure" warnings the cell printed (`warn_alloc()`).
    pub(crate) alloc_warnings: u64,
    pub(crate) zone_locked_pages: u64,
    /// Pages the cell's body took from the page allocator
    /// (`mm_page_alloc`), or for a freeing row gave back (`mm_page_free`):
    /// for slab rows new or discarded slabs (and their sheaves' own
    /// allocations), for page frees the blocks freed.
    pub(crate) page_events: u64,
    pub(crate) extfrag_events: u64,
    pub(crate) kswapd_wakeups: u64,
    pub(crate) lockdep_before: bool,
    pub(crate) lockdep_after: bool,
    pub(crate) observed: Observed,
    pub(crate) alloc_ns: Stats,
    /// Duration of the first allocation that took zone->lock, 0 if none did.
    pub(crate) zone_locked_alloc_ns: u64,
    pub(crate) section_ns: u64,
    /// The kernel's page counters' change over the whole cell, frees
    /// included (`/proc/vmstat`'s figures), where the kernel counts events.
    pub(crate) pages: Option<sys::PageCounts>,
    /// Every lock the section took, judged by the kernel's rules.
    pub(crate) locks: LockRecord,
    /// The context as code inside it sees it, read when the body starts.
    pub(crate) inside: Option<ContextState>,
    /// The body calls `might_sleep()`: an allocation with a mask that may
    /// block (`might_alloc()`), or a control that calls it.
    pub(crate) calls_might_sleep: bool,
    /// `__might_resched()` could print when the section began (its
    /// once-per-second limit had expired): its report is not swallowed.
    pub(crate) sleep_check_open: bool,
    /// Lockdep's lock probes were attached: `locks` is the section's trace
    /// (without them the results carry no lock trace keys at all).
    pub(crate) traced: bool,
}

impl CellResult {
    pub(crate) fn new(cell: Cell, outcome: Outcome) -> Self {
        Self {
            cell,
            outcome,
            path: "none",
            iterations: 0,
            allocated: 0,
            failed: 0,
            attempts: 0,
            migrated: false,
            unsettled: None,
            alloc_warnings: 0,
            zone_locked_pages: 0,
            page_events: 0,
            extfrag_events: 0,
            kswapd_wakeups: 0,
            lockdep_before: sys::lockdep_armed(),
            lockdep_after: sys::lockdep_armed(),
            observed: Observed {
                reports: [0; 5],
                sleep_report: "-",
                unattributed: 0,
                lock: Default::default(),
                lock_at: Default::default(),
            },
            alloc_ns: Stats::default(),
            zone_locked_alloc_ns: 0,
            section_ns: 0,
            pages: None,
            locks: LockRecord::default(),
            inside: None,
            calls_might_sleep: false,
            sleep_check_open: false,
            traced: false,
        }
    }

    /// The module's own verdict that `might_sleep()` reports in this
    /// cell: it is called, and `__might_resched()`'s test fails there.
    pub(crate) fn derived_might_sleep(&self) -> bool {
        self.calls_might_sleep && self.inside.is_some_and(|s| s.might_sleep_reports())
    }

    /// Derived reports of each kind, in `REPORT_KINDS` order: invalid wait
    /// contexts and sleeps in atomic (the others are not derived).
    pub(crate) fn derived(&self) -> [usize; 2] {
        [
            self.locks.count_invalid_wait(),
            self.locks.count_sleeping() + usize::from(self.derived_might_sleep()),
        ]
    }

    pub(crate) fn has_reports(&self) -> bool {
        self.observed.reports.iter().any(|&n| n > 0)
    }
}

impl fmt::Display for CellResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.cell {
            Cell::Alloc(_) => "alloc",
            Cell::Control { .. } => "control",
        };
        let outcome = match self.outcome {
            Outcome::Ran => "ran",
            Outcome::RefusedLowMemory => "refused_low_memory",
        };
        write!(
            f,
            "kind={} {} context={} outcome={} observed_path={}",
            kind,
            self.cell,
            CONTEXTS[self.cell.context()].name,
            outcome,
            self.path
        )?;
        // A mask's and an allocator's column heads, from their tables.
        let (gfp_short, title, slab) = match self.cell {
            Cell::Alloc(a) => {
                let def = &ALLOCATORS[a.alloc];
                (MASKS[a.mask].short, def.title, def.slab)
            }
            Cell::Control { .. } => ("-", "-", false),
        };
        write!(
            f,
            " matrix={} gfp_short={} title={} slab={} iterations={} allocated={} failed={} attempts={} migrated={} zone_locked_pages={} page_events={} extfrag_events={} kswapd_wakeups={} alloc_warnings={} unsettled={}",
            u8::from(self.cell.in_matrix()),
            gfp_short,
            title,
            u8::from(slab),
            self.iterations,
            self.allocated,
            self.failed,
            self.attempts,
            u8::from(self.migrated),
            self.zone_locked_pages,
            self.page_events,
            self.extfrag_events,
            self.kswapd_wakeups,
            self.alloc_warnings,
            self.unsettled.unwrap_or("-")
        )?;
        if let Some(p) = self.pages {
            write!(
                f,
                " kernel_alloc={} kernel_free={} kernel_slab={}",
                p.alloc, p.free, p.slab
            )?;
        }
        self.fmt_reports(f)?;
        self.fmt_derived(f)?;
        writeln!(
            f,
            " unattributed={} alloc_ns_min={} alloc_ns_median={} alloc_ns_max={} zone_locked_alloc_ns={} section_ns={}",
            self.observed.unattributed,
            self.alloc_ns.min,
            self.alloc_ns.median,
            self.alloc_ns.max,
            self.zone_locked_alloc_ns,
            self.section_ns
        )
    }
}

impl CellResult {
    /// Whether lockdep was armed around the cell, the report kinds with
    /// their symbols, and what the kernel reported.
    fn fmt_reports(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            " lockdep_before={} lockdep_after={} kinds=",
            u8::from(self.lockdep_before),
            u8::from(self.lockdep_after)
        )?;
        for (i, (name, symbol)) in REPORT_KINDS.iter().zip(REPORT_SYMBOLS).enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{}{}:{}", sep, name.to_str().unwrap_or("?"), symbol)?;
        }
        for (name, count) in REPORT_KINDS.iter().zip(self.observed.reports) {
            write!(f, " {}={}", name.to_str().unwrap_or("?"), count)?;
        }
        write!(
            f,
            " lock={} lock_at={} sleep_report={}",
            self.observed.lock, self.observed.lock_at, self.observed.sleep_report
        )
    }

    /// The module's verdicts from the lock trace and the context's state,
    /// the state itself, and the trace (last: the longest value).
    fn fmt_derived(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.traced {
            return Ok(());
        }
        let [wait, sleep] = self.derived();
        write!(
            f,
            " sleep_check_open={} derived_{}={} derived_{}={}",
            u8::from(self.sleep_check_open),
            REPORT_KINDS[0].to_str().unwrap_or("?"),
            wait,
            REPORT_KINDS[1].to_str().unwrap_or("?"),
            sleep
        )?;
        // The first verdict, as a kernel report would name it.
        let first = self.locks.first_verdict();
        if self.derived_might_sleep() {
            f.write_str(" derived_lock=might_sleep derived_at=-")?;
        } else if let Some(l) = first {
            write!(f, " derived_lock={} derived_at=", l.name)?;
            sys::lockdep::write_symbol(f, l.ip)?;
        } else {
            f.write_str(" derived_lock=- derived_at=-")?;
        }
        match &self.inside {
            Some(s) => write!(
                f,
                " inside_preempt_count={:#x} inside_rcu_depth={} inside_irqs_disabled={} inside_irq_context={}",
                s.preempt_count,
                s.rcu_depth,
                u8::from(s.irqs_disabled),
                s.irq_context()
            )?,
            None => f.write_str(" inside_preempt_count=-")?,
        }
        write!(
            f,
            " locks_dropped={} locks_held_after={} locks_left=",
            self.locks.dropped, self.locks.held_after
        )?;
        match self.locks.left.and_then(|i| self.locks.seen.get(i)) {
            Some(l) => write!(f, "{}", l.name)?,
            None => f.write_str("-")?,
        }
        write!(f, " locks={}", self.locks)
    }
}

/// The debugfs counters: running totals over the results since `reset`.
pub(crate) struct Counters {
    pub(crate) reports: [Atomic<u64>; 5],
    pub(crate) allocs_ok: Atomic<u64>,
    pub(crate) allocs_failed: Atomic<u64>,
    pub(crate) cells_run: Atomic<u64>,
    pub(crate) cells_refused: Atomic<u64>,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            reports: [const { Atomic::new(0) }; 5],
            allocs_ok: Atomic::new(0),
            allocs_failed: Atomic::new(0),
            cells_run: Atomic::new(0),
            cells_refused: Atomic::new(0),
        }
    }

    pub(crate) fn add(&self, r: &CellResult) {
        for (c, n) in self.reports.iter().zip(r.observed.reports) {
            c.fetch_add(n, Relaxed);
        }
        self.allocs_ok.fetch_add(r.allocated.into(), Relaxed);
        self.allocs_failed.fetch_add(r.failed.into(), Relaxed);
        match r.outcome {
            Outcome::Ran => self.cells_run.fetch_add(1, Relaxed),
            Outcome::RefusedLowMemory => self.cells_refused.fetch_add(1, Relaxed),
        };
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Atomic<u64>> {
        Iterator::chain(
            self.reports.iter(),
            [
                &self.allocs_ok,
                &self.allocs_failed,
                &self.cells_run,
                &self.cells_refused,
            ],
        )
    }
}
