// SPDX-License-Identifier: GPL-2.0

//! The runner: runs one cell at a time inside its context (the sections
//! themselves are `sections.rs`'s and `kfree_rcu.rs`'s), with every
//! allocation of the section owned and freed after it, and keeps the
//! results (`results.rs`) and counters.

use crate::detector::Detector;
use crate::inside::Inside;
use crate::locktrace::LockRecord;
use crate::mm;
use crate::results::{CellResult, Counters, Outcome};
use crate::spec::{for_each_case, AllocCell, Cell, Spec};
use crate::sys;
use crate::tables::{Locks, ALLOCATORS, CONTEXTS, CONTROLS};
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
/// Reasons a run of a cell does not answer it (`unsettled=`).
pub(crate) const WARN_SPENT: &str = "warn_spent";
/// A softirq body that a softirq daemon served instead of the cell's task
/// (on PREEMPT_RT its reports are that daemon's, not the cell's).
const SOFTIRQ_ELSEWHERE: &str = "softirq_elsewhere";
/// The context never ran the body (an NMI that did not arrive).
const BODY_NOT_RUN: &str = "body_not_run";
/// A `path=pcp` cell whose warmed list the kernel drained before its
/// section ended (the vmstat worker's `decay_pcp_high()`, seen once on the
/// first cell after a restore): the section then refilled under
/// `zone->lock`, which is not the fast path the cell asks about.
pub(crate) const PCP_DRAINED: &str = "pcp_drained";

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
            unsafe { crate::probes::attach(crate::probes::RUN_PROBES, &self.detector, false) }.ok()
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
