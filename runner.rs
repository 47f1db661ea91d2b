// SPDX-License-Identifier: GPL-2.0

//! The runner: runs one cell at a time inside its context, with every
//! allocation of the section owned and freed after it, and keeps the
//! results and counters.

use crate::detector::{Detector, Observed, REPORT_KINDS};
use crate::inside::Inside;
use crate::locktrace::LockRecord;
use crate::mm;
use crate::spec::{for_each_case, AllocCell, Cell, Path, Spec};
use crate::sys::{self, lockdep::ContextState};
use crate::tables::{AllocatorDef, Locks, ALLOCATORS, CONTEXTS, CONTROLS, MASKS};
use core::fmt;
use kernel::{
    alloc::KVVec,
    new_mutex,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Mutex,
    },
    time::{delay::fsleep, Delta, Instant, Monotonic},
};

/// Most result lines kept; `run` refuses more (with `-ENOSPC`) until
/// `reset`, so no result is ever dropped unread.
pub(crate) const MAX_RESULTS: usize = 4096;
/// Result lines reserved at load and kept by `reset`: a matrix's worth, so
/// that storing a cell's result does not grow the vector (and allocate
/// pages) while a caller measures around that cell.
const RESULTS_RESERVED: usize = 512;
/// How often a `path=pcp` cell is run again when its task left the CPU
/// whose per-cpu list it filled.
const PCP_ATTEMPTS: u32 = 5;
/// Most warm-ups of a `path=pcp` cell whose pages the kernel drained.
const WARM_ATTEMPTS: u32 = 3;
/// Reasons a run of a cell does not answer it (`unsettled=`).
const WARN_SPENT: &str = "warn_spent";
/// A softirq body that a softirq daemon served instead of the cell's task
/// (on PREEMPT_RT its reports are that daemon's, not the cell's).
const SOFTIRQ_ELSEWHERE: &str = "softirq_elsewhere";
/// The context never ran the body (an NMI that did not arrive).
const BODY_NOT_RUN: &str = "body_not_run";
/// A `path=pcp` cell whose warmed list the kernel drained before its
/// section ended (the vmstat worker's `decay_pcp_high()`, seen once on the
/// first cell after a restore): the section then refilled under
/// `zone->lock`, which is not the fast path the cell asks about.
const PCP_DRAINED: &str = "pcp_drained";

/// What a `path=pcp` warm-up left: the CPU whose list it filled, and the
/// per-cpu drain count at the start of its last attempt (a drain since
/// then, that attempt's own included, may have emptied the list).
#[derive(Clone, Copy)]
struct WarmUp {
    cpu: u32,
    drains_seen: u64,
}

/// What an allocating section counted (`State::allocate_in_section`).
#[derive(Default)]
struct Tally {
    iterations: u32,
    failed: u32,
    /// Duration of the first allocation that took zone->lock, 0 if none did.
    zone_locked_alloc_ns: u64,
    cpu_first: u32,
    cpu_last: u32,
    /// A page the full vector could not take, freed after the section.
    spare: Option<sys::Allocation>,
}

/// The path an allocating cell took, from the events its section raised.
fn allocation_path(cell: AllocCell, r: &CellResult) -> &'static str {
    let slab = ALLOCATORS[cell.alloc].slab;
    if r.allocated > 0 && cell.path == Path::Slowpath {
        "slowpath"
    } else if slab && r.page_events > 0 {
        "new_slab"
    } else if r.zone_locked_pages + r.extfrag_events > 0 {
        "zone_lock"
    } else if r.allocated == 0 {
        "none"
    } else if !slab && cell.order > sys::PCP_MAX_ORDER {
        "unseen"
    } else {
        "pcp"
    }
}

#[derive(Clone, Copy, Default)]
pub(crate) struct Stats {
    min: u64,
    median: u64,
    max: u64,
}

impl Stats {
    fn of(samples: &mut [u64]) -> Self {
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
    alloc_warnings: u64,
    zone_locked_pages: u64,
    /// Pages the cell's body took from the page allocator
    /// (`mm_page_alloc`), or for a freeing row gave back (`mm_page_free`):
    /// for slab rows new or discarded slabs (and their sheaves' own
    /// allocations), for page frees the blocks freed.
    pub(crate) page_events: u64,
    extfrag_events: u64,
    kswapd_wakeups: u64,
    pub(crate) lockdep_before: bool,
    lockdep_after: bool,
    pub(crate) observed: Observed,
    alloc_ns: Stats,
    /// Duration of the first allocation that took zone->lock, 0 if none did.
    zone_locked_alloc_ns: u64,
    section_ns: u64,
    /// The kernel's page counters' change over the whole cell, frees
    /// included (`/proc/vmstat`'s figures), where the kernel counts events.
    pages: Option<sys::PageCounts>,
    /// Every lock the section took, judged by the kernel's rules.
    pub(crate) locks: LockRecord,
    /// The context as code inside it sees it, read when the body starts.
    inside: Option<ContextState>,
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
        write!(
            f,
            " matrix={} gfp_short={} slab={} iterations={} allocated={} failed={} attempts={} migrated={} zone_locked_pages={} page_events={} extfrag_events={} kswapd_wakeups={} alloc_warnings={} unsettled={}",
            u8::from(self.cell.in_matrix()),
            match self.cell {
                Cell::Alloc(a) => MASKS[a.mask].short,
                Cell::Control { .. } => "-",
            },
            u8::from(match self.cell {
                Cell::Alloc(a) => ALLOCATORS[a.alloc].slab,
                Cell::Control { .. } => false,
            }),
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
        write!(
            f,
            " lockdep_before={} lockdep_after={}",
            u8::from(self.lockdep_before),
            u8::from(self.lockdep_after)
        )?;
        for (name, count) in REPORT_KINDS.iter().zip(self.observed.reports) {
            write!(f, " {}={}", name.to_str().unwrap_or("?"), count)?;
        }
        write!(
            f,
            " lock={} lock_at={} sleep_report={}",
            self.observed.lock, self.observed.lock_at, self.observed.sleep_report
        )?;
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
    fn new() -> Self {
        Self {
            reports: [const { Atomic::new(0) }; 5],
            allocs_ok: Atomic::new(0),
            allocs_failed: Atomic::new(0),
            cells_run: Atomic::new(0),
            cells_refused: Atomic::new(0),
        }
    }

    fn add(&self, r: &CellResult) {
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

    fn all(&self) -> impl Iterator<Item = &Atomic<u64>> {
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

/// Vectors every cell reuses, reserved at load for the largest `n` of the
/// default matrix (a larger `n` grows them): a cell allocates no vector of
/// that size of its own (only a `path=pcp` warm-up's few entries and a
/// `path=slowpath` drain's list, which is the point of that path), so the
/// kernel's page counts over a cell hold the cell's allocations.
pub(crate) struct Scratch {
    /// The section's allocations, or a freeing cell's allocations to free.
    allocations: KVVec<sys::Allocation>,
    /// The duration of each allocation.
    times: KVVec<u64>,
}

impl Scratch {
    fn new() -> Result<Self> {
        // Freeing cells time nothing.
        let (mut most, mut most_timed) = (0, 0);
        for_each_case(|cell| {
            if let Cell::Alloc(a) = cell {
                most = most.max(a.n as usize);
                if !ALLOCATORS[a.alloc].frees {
                    most_timed = most_timed.max(a.n as usize);
                }
            }
            Ok(())
        })?;
        Ok(Self {
            allocations: KVVec::with_capacity(most, GFP_KERNEL)?,
            times: KVVec::with_capacity(most_timed, GFP_KERNEL)?,
        })
    }
}

#[pin_data]
pub(crate) struct State {
    pub(crate) detector: Detector,
    pub(crate) counters: Counters,
    pub(crate) locks: Locks,
    /// Results and counters change together under this lock.
    #[pin]
    pub(crate) results: Mutex<KVVec<CellResult>>,
    /// Serializes runs and resets.
    #[pin]
    pub(crate) run_lock: Mutex<()>,
    /// Taken under `run_lock` only.
    #[pin]
    scratch: Mutex<Scratch>,
    /// Every context seen from inside, recorded at load.
    #[pin]
    pub(crate) inside: Mutex<KVec<Inside>>,
    /// Set once the probes are attached: no cell runs unobserved.
    pub(crate) ready: Atomic<bool>,
    /// The kernel has lockdep's `lock_acquire`/`lock_release` tracepoints.
    pub(crate) lock_trace: Atomic<bool>,
    /// Their probes are attached (`with_lock_probes`, under `run_lock`).
    lock_probes_attached: Atomic<bool>,
    /// Each cell waits until `__might_resched()` could report again (the
    /// `sleep_check_wait` parameter): without the wait, the kernel's own
    /// sleep reports go missing and only the derived verdicts answer.
    pub(crate) wait_sleep_check: Atomic<bool>,
    pub(crate) stopping: Atomic<bool>,
}

impl State {
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let locks = Locks {
            raw: KBox::pin_init(sys::RawSpinLock::new(), GFP_KERNEL)?,
            spin: KBox::pin_init(
                kernel::new_spinlock!((), "rust_gfp_nolocks_spin"),
                GFP_KERNEL,
            )?,
            #[cfg(have_self_nmi)]
            nmi: KBox::pin_init(sys::NmiHandler::new(), GFP_KERNEL)?,
        };
        let scratch = Scratch::new()?;
        let results = KVVec::with_capacity(RESULTS_RESERVED, GFP_KERNEL)?;
        Ok(try_pin_init!(Self {
            detector: Detector::new(),
            counters: Counters::new(),
            locks,
            results <- new_mutex!(results),
            run_lock <- new_mutex!(()),
            scratch <- new_mutex!(scratch),
            inside <- new_mutex!(KVec::new()),
            ready: Atomic::new(false),
            lock_trace: Atomic::new(false),
            lock_probes_attached: Atomic::new(false),
            wait_sleep_check: Atomic::new(true),
            stopping: Atomic::new(false),
        }? Error))
    }

    /// Runs a spec; returns when all its cells ran. A single cell that was
    /// refused is recorded and fails with `ENOMEM`; `all` records refusals
    /// and goes on.
    pub(crate) fn run(&self, spec: Spec) -> Result {
        if !self.ready.load(Relaxed) {
            pr_err!("run: the module is still attaching its tracepoint probes; try again\n");
            return Err(EAGAIN);
        }
        let _serialized = self.run_lock.lock();
        if self.stopping.load(Relaxed) {
            return Err(ENODEV);
        }
        self.with_lock_probes(|| match spec {
            Spec::One(cell) => match self.run_cell(cell)? {
                Outcome::Ran => Ok(()),
                Outcome::RefusedLowMemory => Err(ENOMEM),
            },
            Spec::All(selection) => {
                let first = self.results.lock().len();
                self.run_all(|cell| selection.matches(cell))?;
                self.summary(first);
                Ok(())
            }
        })
    }

    /// Runs `f` with lockdep's `lock_acquire` and `lock_release` probes
    /// attached, where the kernel has them: between runs every lock
    /// operation of the system would pay for a probe call (measured: a
    /// fork-heavy loop 9 % slower on the lockdep test kernel with them
    /// attached and idle). Takes `run_lock` held by the caller.
    pub(crate) fn with_lock_probes<R>(&self, f: impl FnOnce() -> R) -> R {
        let probes = if self.lock_trace.load(Relaxed) {
            // SAFETY: The probes are dropped below, while `self` lives.
            unsafe { crate::probes::attach(crate::probes::RUN_PROBES, &self.detector) }.ok()
        } else {
            None
        };
        if probes.is_none() && self.lock_trace.load(Relaxed) {
            pr_warn!("run: cannot attach the lock_acquire, lock_release, kmalloc and hrtimer_start probes: this run has no lock trace\n");
        }
        self.lock_probes_attached.store(probes.is_some(), Relaxed);
        let result = f();
        self.lock_probes_attached.store(false, Relaxed);
        drop(probes);
        result
    }

    /// Runs every case `select` accepts, in `run all` order, recording
    /// refusals as results. Takes `run_lock` held by the caller.
    pub(crate) fn run_all(&self, mut select: impl FnMut(&Cell) -> bool) -> Result {
        for_each_case(|cell| {
            if select(&cell) {
                self.run_cell(cell)?;
            }
            Ok(())
        })
    }

    /// Records what every context looks like from inside (`contexts`).
    pub(crate) fn record_inside(&self) -> Result {
        let _serialized = self.run_lock.lock();
        let inside =
            self.with_lock_probes(|| crate::inside::record(&self.detector, &self.locks))?;
        *self.inside.lock() = inside;
        Ok(())
    }

    /// Waits until `__might_resched()`'s once-per-HZ rate limit has expired,
    /// so that it cannot swallow a report of the next cell.
    fn wait_might_resched_window(&self) {
        if !self.wait_sleep_check.load(Relaxed) {
            return;
        }
        let hz = sys::hz();
        while sys::jiffies().wrapping_sub(self.detector.last_sleep_report.load(Relaxed)) <= hz + 1 {
            if self.stopping.load(Relaxed) {
                return;
            }
            fsleep(Delta::from_millis(20));
        }
    }

    /// Whether `__might_resched()` would print now: its last report (seen
    /// by the detector) is more than a second old.
    fn sleep_check_open(&self) -> bool {
        sys::jiffies().wrapping_sub(self.detector.last_sleep_report.load(Relaxed)) > sys::hz() + 1
    }

    /// Returns once a cell started now would not wait for `__might_resched()`'s
    /// rate limit: a caller that measures around `run` waits here first,
    /// outside its measurement (`settle`).
    pub(crate) fn settle(&self) {
        let _serialized = self.run_lock.lock();
        self.wait_might_resched_window();
    }

    fn run_cell(&self, cell: Cell) -> Result<Outcome> {
        // ENODEV, not EINTR: userspace retries a write that got EINTR, and
        // the retry would meet a file that is being removed.
        if self.stopping.load(Relaxed) {
            pr_info!(
                "run: stopped before {}: the module is being unloaded\n",
                cell
            );
            return Err(ENODEV);
        }
        if self.results.lock().len() >= MAX_RESULTS {
            pr_err!(
                "run: results hold {} cells, the most kept; read them and write 1 to reset\n",
                MAX_RESULTS
            );
            return Err(ENOSPC);
        }
        self.wait_might_resched_window();
        // Around the whole cell, warm-up and frees included: what it took
        // and gave back, by the kernel's count rather than the module's.
        let counts_before = sys::page_counts();
        let mut result = match cell {
            Cell::Alloc(a) => self.run_alloc(a)?,
            Cell::Control { control, ctx } => self.run_control(control, ctx),
        };
        result.pages = counts_before
            .zip(sys::page_counts())
            .map(|(before, after)| after.since(before));
        let outcome = result.outcome;
        let mut results = self.results.lock();
        results.push(result, GFP_KERNEL)?;
        if let Some(r) = results.last() {
            self.counters.add(r);
        }
        Ok(outcome)
    }

    fn run_control(&self, c: usize, ctx: usize) -> CellResult {
        let def = &CONTROLS[c];
        let mut r = CellResult::new(Cell::Control { control: c, ctx }, Outcome::Ran);
        r.calls_might_sleep = def.calls_might_sleep;
        self.observe_section(&mut r, ctx, &mut || (def.body)(&self.locks));
        self.end_observation(&mut r);
        r
    }

    fn run_alloc(&self, cell: AllocCell) -> Result<CellResult> {
        if !mm::memory_allows(cell) {
            return Ok(CellResult::new(
                Cell::Alloc(cell),
                Outcome::RefusedLowMemory,
            ));
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Each attempt waits out the rate limit: an earlier attempt's
            // report must not swallow this one's.
            if attempts > 1 {
                self.wait_might_resched_window();
            }
            let mut r = self.alloc_section(cell)?;
            r.attempts = attempts;
            // Migration and a kswapd still running pass; a spent warning or
            // a hopeless node do not (a fresh kernel is needed).
            let passing = r.migrated
                || matches!(
                    r.unsettled,
                    Some(
                        mm::KSWAPD_AWAKE
                            | mm::ABOVE_MIN
                            | SOFTIRQ_ELSEWHERE
                            | PCP_DRAINED
                            | crate::kfree_rcu::PATH_NOT_REACHED
                    )
                );
            if !passing || attempts == PCP_ATTEMPTS || self.stopping.load(Relaxed) {
                return Ok(r);
            }
        }
    }

    /// One run of an allocation cell: its vectors reserved, then the
    /// section of its kind of row.
    fn alloc_section(&self, cell: AllocCell) -> Result<CellResult> {
        let def = &ALLOCATORS[cell.alloc];
        // Reserved before the section: nothing inside it may allocate, and
        // no page is dropped (freed) inside it (a freeing cell frees them
        // there, on purpose). Up to MAX_ITERATIONS
        // entries, so kvmalloc: no large physically contiguous block.
        let mut scratch = self.scratch.lock();
        let Scratch {
            allocations: pages,
            times,
        } = &mut *scratch;
        pages.clear();
        times.clear();
        pages.reserve(cell.n as usize, GFP_KERNEL)?;
        if def.rcu {
            return self.rcu_section(cell, pages);
        }
        if def.frees {
            return self.free_section(cell, pages);
        }
        times.reserve(cell.n as usize, GFP_KERNEL)?;
        self.page_section(cell, pages, times)
    }

    /// An allocating cell: warm-up for `path=pcp`, memory drained for
    /// `path=slowpath`, then the section, then the frees.
    fn page_section(
        &self,
        cell: AllocCell,
        pages: &mut KVVec<sys::Allocation>,
        times: &mut KVVec<u64>,
    ) -> Result<CellResult> {
        let def = &ALLOCATORS[cell.alloc];
        let gfp = MASKS[cell.mask].gfp;
        let warm_up = match cell.path {
            Path::Pcp => Some(self.warm_pcp(def, gfp, cell.order, cell.n as usize)?),
            _ => None,
        };
        let mut r = CellResult::new(Cell::Alloc(cell), Outcome::Ran);
        r.calls_might_sleep = sys::may_block(gfp);
        // The slow path's state: memory drained, held until after the
        // section, with the task kept on its CPU ahead of kswapd.
        let (fifo, drained) = if cell.path == Path::Slowpath {
            let fifo = sys::FifoWhileDrained::new();
            let drained = mm::drain()?;
            r.unsettled = mm::slowpath_unready();
            if r.unsettled.is_some() {
                // Not run: the section would spend lockdep's one report
                // and the rate limits on a state that is not the cell's.
                return Ok(r);
            }
            (Some(fifo), Some(drained))
        } else {
            (None, None)
        };
        let tally = self.allocate_in_section(&mut r, cell, pages, times);
        let detector = &self.detector;
        r.zone_locked_pages = detector.zone_locked.load(Relaxed);
        r.page_events = detector.page_allocs.load(Relaxed);
        r.extfrag_events = detector.extfrag.load(Relaxed);
        r.kswapd_wakeups = detector.kswapd_wakeups.load(Relaxed);
        r.allocated = (pages.len() + usize::from(tally.spare.is_some())) as u32;
        // Read before the frees below, which may drain a list themselves.
        let drained_since_warm_up =
            warm_up.is_some_and(|w| detector.pcpu_drained_total.load(Relaxed) != w.drains_seen);
        // Freed outside the section (freeing takes the same locks), while
        // still observed: a report from freeing would be the cell's (for
        // the hardirq row, whose body alone is attributed, unattributed).
        pages.clear();
        drop(tally.spare);
        r.alloc_warnings = detector.alloc_warnings.load(Relaxed);
        self.end_observation(&mut r);
        // A page cell that refilled under zone->lock after the kernel
        // drained its warmed list did not take the fast path it asks
        // about (slab rows warm a sheaf, which no page drain touches).
        if drained_since_warm_up && !def.slab && r.zone_locked_pages + r.extfrag_events > 0 {
            r.unsettled = r.unsettled.or(Some(PCP_DRAINED));
        }
        drop(drained);
        drop(fifo);
        // warn_alloc() prints once per 10 s, system-wide: a failure without
        // __GFP_NOWARN that printed nothing met a spent rate limit, and its
        // report (show_mem() takes zone->lock) is missing.
        if def.warns && tally.failed > 0 && gfp & sys::GFP_NOWARN == 0 && r.alloc_warnings == 0 {
            r.unsettled = r.unsettled.or(Some(WARN_SPENT));
        }
        r.iterations = tally.iterations;
        r.failed = tally.failed;
        r.migrated =
            warm_up.is_some_and(|w| w.cpu != tally.cpu_first || tally.cpu_first != tally.cpu_last);
        r.path = allocation_path(cell, &r);
        r.alloc_ns = Stats::of(times);
        r.zone_locked_alloc_ns = tally.zone_locked_alloc_ns;
        Ok(r)
    }

    /// The section of an allocating cell: allocates up to `n` times, into
    /// `pages` (reserved), timing each, until its path was reached (the
    /// zone_lock path until the buddy lists served, the new_slab path
    /// until the slab allocator took a page) or the allocator refused (it
    /// would refuse again). Observation starts here, after any warm-up:
    /// its reports and trips through zone->lock are not the cell's.
    fn allocate_in_section(
        &self,
        r: &mut CellResult,
        cell: AllocCell,
        pages: &mut KVVec<sys::Allocation>,
        times: &mut KVVec<u64>,
    ) -> Tally {
        let def = &ALLOCATORS[cell.alloc];
        let gfp = MASKS[cell.mask].gfp;
        let detector = &self.detector;
        let mut t = Tally::default();
        self.observe_section(r, cell.ctx, &mut || {
            t.cpu_first = sys::current_cpu();
            while t.iterations < cell.n {
                let buddy_before = detector.buddy_events();
                // NMI-safe clock: the body may run in an NMI.
                let t0 = sys::now_ns();
                let page = (def.alloc)(gfp, cell.order);
                let ns = sys::now_ns().saturating_sub(t0);
                let _ = times.push_within_capacity(ns);
                if t.zone_locked_alloc_ns == 0 && detector.buddy_events() != buddy_before {
                    t.zone_locked_alloc_ns = ns;
                }
                t.iterations += 1;
                let got = page.is_some();
                match page {
                    // At most `n` pages into `n` reserved slots; were it
                    // ever full, the page waits in `spare`, to be freed
                    // after the section like the others.
                    Some(p) => {
                        if let Err(p) = pages.push_within_capacity(p) {
                            t.spare = Some(p.0);
                            break;
                        }
                    }
                    None => t.failed += 1,
                }
                let reached = match cell.path {
                    Path::ZoneLock => detector.buddy_events() > 0,
                    Path::NewSlab => detector.page_allocs.load(Relaxed) > 0,
                    _ => continue,
                };
                if reached || !got {
                    break;
                }
            }
            t.cpu_last = sys::current_cpu();
        });
        t
    }

    /// Runs `body` in the context of `ctx`, observed by the detector, and
    /// records `lockdep_before` and the section's duration in `r`. The
    /// observation goes on until [`Self::end_observation`]: what the caller
    /// frees after the section is still the cell's.
    pub(crate) fn observe_section(&self, r: &mut CellResult, ctx: usize, body: &mut dyn FnMut()) {
        r.lockdep_before = sys::lockdep_armed();
        r.sleep_check_open = self.sleep_check_open();
        r.traced = self.lock_probes_attached.load(Relaxed);
        self.detector.begin(CONTEXTS[ctx].body_in);
        let mut inside = None;
        let start = Instant::<Monotonic>::now();
        self.detector.trace_locks(&mut || {
            (CONTEXTS[ctx].enter)(&self.locks, &mut || {
                inside = Some(sys::lockdep::context_state());
                self.detector.body(body)
            })
        });
        r.section_ns = start.elapsed().as_nanos() as u64;
        r.inside = inside;
    }

    pub(crate) fn end_observation(&self, r: &mut CellResult) {
        if self.detector.body_elsewhere() {
            r.unsettled = r.unsettled.or(Some(SOFTIRQ_ELSEWHERE));
        }
        if !self.detector.body_ran() {
            r.unsettled = r.unsettled.or(Some(BODY_NOT_RUN));
        }
        r.observed = self.detector.end();
        r.lockdep_after = sys::lockdep_armed();
        r.locks = self.detector.locks.snapshot().unwrap_or_else(|_| {
            pr_warn!("no memory to keep the lock trace of {}\n", r.cell);
            LockRecord::default()
        });
    }

    /// A freeing cell: `n` pages or objects allocated before the section
    /// (process context, `GFP_KERNEL`, or an any-context allocator's own
    /// mask), freed one by one inside it until `free_pcppages_bulk()` took
    /// `zone->lock` (`mm_page_pcpu_drain`), or all of them (`path=pcp`:
    /// back to the per-cpu list or sheaf they came from); the rest are
    /// freed after it, still observed.
    fn free_section(
        &self,
        cell: AllocCell,
        pages: &mut KVVec<sys::Allocation>,
    ) -> Result<CellResult> {
        let def = &ALLOCATORS[cell.alloc];
        // An allocator for any context takes its own masks only (the
        // cell's); the others may reclaim here, in process context, but
        // fail rather than call the OOM killer.
        let gfp = if def.any_context {
            MASKS[cell.mask].gfp
        } else {
            sys::GFP_KERNEL | sys::GFP_NOWARN | sys::GFP_NORETRY
        };
        // path=pcp frees pages back to the list they were just taken from:
        // n more are taken and kept until after the section, so the list
        // ends n below where it started, under its high mark even if that
        // mark decayed to the list's length meanwhile (decay_pcp_high()).
        let n = cell.n as usize;
        let held = if cell.path == Path::Pcp && !def.slab {
            n
        } else {
            0
        };
        pages.reserve(n + held, GFP_KERNEL)?;
        while pages.len() < n + held {
            match (def.alloc)(gfp, cell.order) {
                Some(p) => {
                    if let Err(p) = pages.push_within_capacity(p) {
                        drop(p);
                        break;
                    }
                }
                None => break,
            }
        }
        let mut r = CellResult::new(Cell::Alloc(cell), Outcome::Ran);
        r.allocated = pages.len() as u32;
        let mut freed = 0u32;
        let detector = &self.detector;
        let allocated_on = sys::current_cpu();
        let mut freed_on = allocated_on;
        self.observe_section(&mut r, cell.ctx, &mut || {
            freed_on = sys::current_cpu();
            while pages.len() > held {
                let Some(p) = pages.pop() else { break };
                drop(p);
                freed += 1;
                // A report also ends it: a free whose per-cpu trylock
                // failed takes zone->lock in free_one_page(), which no
                // tracepoint shows; no more of those than needed.
                if detector.pcpu_drained.load(Relaxed) > 0 || detector.reported() {
                    break;
                }
            }
        });
        r.zone_locked_pages = detector.pcpu_drained.load(Relaxed);
        r.page_events = detector.page_frees.load(Relaxed);
        pages.clear();
        self.end_observation(&mut r);
        r.iterations = freed;
        // A path=pcp free lands in this CPU's sheaf or per-cpu list only on
        // the CPU that allocated it (whose allocation left room there).
        r.migrated = cell.path == Path::Pcp && freed_on != allocated_on;
        // Above the per-cpu orders every free goes to free_one_page(),
        // under zone->lock, where no tracepoint fires: mm_page_free (before
        // it) shows the free happened, the order where it went.
        let freed_to_buddy = !def.slab && cell.order > sys::PCP_MAX_ORDER && r.page_events > 0;
        r.path = if r.zone_locked_pages > 0 || freed_to_buddy {
            "zone_lock"
        } else if def.slab && r.page_events > 0 {
            "slab_freed"
        } else if freed > 0 {
            "pcp"
        } else {
            "none"
        };
        Ok(r)
    }

    /// Leaves `n` pages of this order on this CPU's per-cpu list: allocated
    /// and freed under a `spinlock_t`, which keeps the task on this CPU and
    /// is a legal context for the masks `path=pcp` takes, on both flavors.
    fn warm_pcp(&self, def: &AllocatorDef, gfp: sys::Gfp, order: u32, n: usize) -> Result<WarmUp> {
        let mut pages = KVVec::<sys::Allocation>::with_capacity(n, GFP_KERNEL)?;
        let drained = &self.detector.pcpu_drained_total;
        let mut cpu = 0;
        let mut drained_before = drained.load(Relaxed);
        for _ in 0..WARM_ATTEMPTS {
            drained_before = drained.load(Relaxed);
            let guard = self.locks.spin.lock();
            for _ in 0..n {
                match (def.alloc)(gfp | sys::GFP_NOWARN, order) {
                    Some(p) => {
                        if let Err(p) = pages.push_within_capacity(p) {
                            drop(p);
                        }
                    }
                    None => break,
                }
            }
            // The pages go back to this CPU's list under the lock.
            while let Some(p) = pages.pop() {
                drop(p);
            }
            cpu = sys::current_cpu();
            drop(guard);
            // A free that found the list at its high mark drained it
            // (free_pcppages_bulk(), starting with the freed page's own
            // list): the section would refill under zone->lock. The drain
            // left room; warm up again.
            if drained.load(Relaxed) == drained_before {
                break;
            }
        }
        // The vector itself (perhaps vmalloc'ed, whose vfree() may sleep)
        // after the lock.
        drop(pages);
        // Counted from the last warm-up's start: a drain after it, the
        // vfree() above included, is seen by the caller.
        Ok(WarmUp {
            cpu,
            drains_seen: drained_before,
        })
    }

    pub(crate) fn reset(&self) -> Result {
        let _serialized = self.run_lock.lock();
        let mut results = self.results.lock();
        // Frees the memory beyond the reserved lines too.
        if results.capacity() > RESULTS_RESERVED {
            *results = KVVec::with_capacity(RESULTS_RESERVED, GFP_KERNEL)?;
        }
        results.clear();
        for c in self.counters.all() {
            c.store(0, Relaxed);
        }
        self.detector.unattributed.store(0, Relaxed);
        Ok(())
    }

    /// Logs what a run of many cells found: the results from index
    /// `from` on (the run's own, not those of earlier writes).
    pub(crate) fn summary(&self, from: usize) {
        let all = self.results.lock();
        let results = all.get(from..).unwrap_or(&[]);
        let with_reports = results.iter().filter(|r| r.has_reports()).count();
        let refused = results.iter().filter(|r| r.outcome != Outcome::Ran).count();
        // A cell's own lockdep report is its check; only cells that started
        // with lockdep already off went unchecked.
        let mut unchecked = results
            .iter()
            .filter(|r| r.outcome == Outcome::Ran && !r.lockdep_before);
        let first = unchecked.next();
        let n_unchecked = first.map_or(0, |_| 1 + unchecked.count());
        pr_info!(
            "ran {} cells: {} with reports, {} refused, {} not checked by lockdep (started after it turned itself off){}; details in /sys/kernel/debug/rust_gfp_nolocks/results\n",
            results.len(),
            with_reports,
            refused,
            n_unchecked,
            match (first.is_some(), results.iter().all(|r| r.traced)) {
                (true, true) => "; the lock trace answers them (below): for lockdep's own report, run the first again after a reboot",
                (true, false) => "; after a reboot run the first of them",
                _ => "",
            }
        );
        if let Some(r) = first {
            pr_info!(
                "first cell not checked by lockdep: echo '{}' > run\n",
                r.cell
            );
        }
        if results.iter().any(|r| r.traced) {
            Self::summary_derived(results);
        }
    }

    /// The second summary line: which answers the kernel's own reports
    /// gave, and which rest on the locks seen and the contexts' state.
    fn summary_derived(results: &[CellResult]) {
        // [kernel and derived, derived only, kernel only] per kind.
        let mut tally = [[0usize; 3]; 2];
        for r in results
            .iter()
            .filter(|r| r.outcome == Outcome::Ran && r.traced)
        {
            for (kind, derived) in r.derived().into_iter().enumerate() {
                let reported = r.observed.reports[kind] > 0;
                match (reported, derived > 0) {
                    (true, true) => tally[kind][0] += 1,
                    (false, true) => tally[kind][1] += 1,
                    (true, false) => tally[kind][2] += 1,
                    (false, false) => {}
                }
            }
        }
        let [wait, sleep] = tally;
        pr_info!(
            "lock trace: {} cells with an invalid wait context ({} reported by lockdep and found in the locks, {} found in the locks alone, {} reported by lockdep alone); {} cells sleeping in atomic ({} reported by the kernel and derived, {} derived alone, {} reported by the kernel alone)\n",
            wait.iter().sum::<usize>(),
            wait[0],
            wait[1],
            wait[2],
            sleep.iter().sum::<usize>(),
            sleep[0],
            sleep[1],
            sleep[2]
        );
    }
}
