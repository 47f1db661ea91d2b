// SPDX-License-Identifier: GPL-2.0

//! GFP mask x atomic context matrix for the page allocator.
//!
//! Runs page allocations (`__get_free_page()`, `__get_free_pages()`,
//! `alloc_pages_nolock()`) with a table of GFP masks inside a table of atomic
//! contexts, catches the kernel reports each cell causes (lockdep's invalid
//! wait context, sleeping in atomic, scheduling while atomic, other lockdep
//! reports, warnings) through the `console` tracepoint, and reports them
//! through debugfs: `/sys/kernel/debug/rust_gfp_nolocks/`.
//!
//! The question it answers is the one of the 2020 `__GFP_NO_LOCKS` debate:
//! which allocation calls are legal under `raw_spin_lock()` and friends on
//! this kernel. Whether one allocation takes `zone->lock` depends on the
//! per-cpu list state, so by default each cell allocates until the
//! allocator has provably been through `zone->lock` (seen on the
//! `mm_page_alloc_zone_locked` and `mm_page_alloc_extfrag` tracepoints),
//! and reports the path it took.
//!
//! Spec grammar written to `run` (one cell, or `all` and a selection):
//!
//! ```text
//! ctx=CONTEXT alloc=ALLOCATOR gfp=MASK [order=N] [path=zone_lock|pcp|slowpath|new_slab] [n=N]
//! control=CONTROL
//! all [KEY=VALUE[,VALUE...]]...
//! ```
//!
//! `cases` lists every cell this kernel can run in that grammar; `results`
//! has one `key=value` line per cell run (see the README for the keys).
//!
//! One file per concern: `sys` (the FFI corner), `tables`, `spec`,
//! `select` (selections by name), `detector`, `runner` and `debugfs`.

/// A module parameter's value, by copy: `value()` returns one where the
/// kernel crate has `value_ref()` beside it (detected by `Kbuild`), and a
/// reference before.
macro_rules! param {
    ($name:ident) => {{
        #[cfg(have_param_value_copy)]
        let value = module_parameters::$name.value();
        #[cfg(not(have_param_value_copy))]
        let value = *module_parameters::$name.value();
        value
    }};
}

mod debugfs;
mod detector;
mod inside;
mod kfree_rcu;
mod locktrace;
mod runner;
mod select;
mod spec;
mod sys;
mod tables;
mod text;

use core::ffi::c_void;
use kernel::{debugfs::Scope, prelude::*, sync::atomic::Relaxed};
use runner::State;
use spec::Cell;

module! {
    type: GfpNoLocks,
    name: "rust_gfp_nolocks",
    authors: ["rust_gfp_nolocks developers"],
    description: "Which GFP masks are legal in which atomic contexts, with the kernel's reports per cell",
    license: "GPL",
    // 0/1 rather than bool, which kernel crates before 7.3 cannot parse.
    params: {
        autorun: u32 {
            default: 0,
            description: "1: run every cell at load time and log a summary (a selection by name: write 'all KEY=VALUE...' to run)",
        },
        controls: u32 {
            default: 1,
            description: "Autorun: 1 (default) to also run the control cells, 0 not to",
        },
        sleep_check_wait: u32 {
            default: 1,
            description: "1 (default): each cell waits until the kernel's once-per-second sleep check may print again, so its report is seen; 0: no wait (faster; the module's derived verdicts still answer)",
        },
    },
}

struct GfpNoLocks {
    // Field order is teardown order: probes go before the state they point
    // to, and the `kfree_rcu()` rows' cache after every cell's objects.
    _probes: KVec<sys::Probe>,
    state: Pin<KBox<Scope<State>>>,
    #[cfg(have_slab_rows)]
    _rcu_cache: sys::rcu::Cache,
}

impl kernel::Module for GfpNoLocks {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        #[cfg(have_slab_rows)]
        let rcu_cache = sys::rcu::Cache::new()?;
        let state = KBox::pin_init(
            Scope::dir(State::new()?, c"rust_gfp_nolocks", debugfs::populate),
            GFP_KERNEL,
        )?;
        let probes = Self::attach_probes(&state)?;
        state
            .wait_sleep_check
            .store(param!(sleep_check_wait) != 0, Relaxed);
        // Reports printed before the probe was attached are invisible. Every
        // __might_resched() report taints the kernel with TAINT_WARN: without
        // it no rate limit is running; with it, let one expire before the
        // first cell.
        let since = if sys::warn_tainted() {
            0
        } else {
            sys::hz() + 2
        };
        state
            .detector
            .last_sleep_report
            .store(sys::jiffies().wrapping_sub(since), Relaxed);
        state.record_inside()?;
        // Only now may `run` start a cell: every probe is attached.
        state.ready.store(true, Relaxed);
        let module = Self {
            _probes: probes,
            state,
            #[cfg(have_slab_rows)]
            _rcu_cache: rcu_cache,
        };
        if param!(autorun) != 0 {
            module.autorun()?;
        }
        Ok(module)
    }
}

impl GfpNoLocks {
    /// Attaches the detector's probes, but lockdep's `lock_acquire` and
    /// `lock_release`, which runs attach (`State::with_lock_probes`). They
    /// exist with `CONFIG_LOCKDEP` only: without them the module runs and
    /// its results have no lock trace.
    fn attach_probes(state: &State) -> Result<KVec<sys::Probe>> {
        let detector: *const c_void = (&raw const state.detector).cast();
        let console: sys::ConsoleProbeFn = detector::console_probe;
        let zone_locked: sys::ZoneLockedProbeFn = detector::zone_locked_probe;
        let extfrag: sys::ExtfragProbeFn = detector::extfrag_probe;
        let wakeup_kswapd: sys::WakeupKswapdProbeFn = detector::wakeup_kswapd_probe;
        let pcpu_drain: sys::PcpuDrainProbeFn = detector::pcpu_drain_probe;
        let page_alloc: sys::PageAllocProbeFn = detector::page_alloc_probe;
        let page_free: sys::PageFreeProbeFn = detector::page_free_probe;
        let attach = |name: &'static CStr, func: *mut c_void| {
            // SAFETY: Each probe below has its tracepoint's signature, and
            // `detector` outlives the probes (field order in `GfpNoLocks`).
            unsafe { sys::Probe::attach(name, func, detector) }
        };
        let needed: [(&CStr, *mut c_void); 7] = [
            (c"console", console as *mut c_void),
            (c"mm_page_alloc_zone_locked", zone_locked as *mut c_void),
            (c"mm_page_alloc_extfrag", extfrag as *mut c_void),
            (c"mm_vmscan_wakeup_kswapd", wakeup_kswapd as *mut c_void),
            (c"mm_page_pcpu_drain", pcpu_drain as *mut c_void),
            (c"mm_page_alloc", page_alloc as *mut c_void),
            (c"mm_page_free", page_free as *mut c_void),
        ];
        let mut probes = KVec::with_capacity(needed.len(), GFP_KERNEL)?;
        for (name, func) in needed {
            let probe = attach(name, func).inspect_err(|_| {
                pr_err!("the {} tracepoint is missing: the kernel needs CONFIG_TRACEPOINTS (e.g. CONFIG_FTRACE=y with CONFIG_ENABLE_DEFAULT_TRACERS=y)\n", name)
            })?;
            probes.push(probe, GFP_KERNEL)?;
        }
        // Attached while cells run (`State::with_lock_probes`); here only
        // to learn whether the kernel has them.
        // SAFETY: The probes are dropped at once, while `state` lives.
        match unsafe { detector::attach_run_probes(&state.detector) } {
            Some(_) => state.lock_trace.store(true, Relaxed),
            None => pr_warn!("no lock_acquire/lock_release tracepoints (the kernel needs CONFIG_LOCKDEP), or no kmalloc/hrtimer_start: results have no lock trace, no verdicts from it and no kfree_rcu() paths\n"),
        }
        Ok(probes)
    }

    /// Runs every cell (and the controls unless `controls=0`); a refused
    /// cell is recorded as such and the run goes on. Module parameters are
    /// numbers, so a selection by name goes through `run` instead
    /// (`all ctx=raw_spin_lock alloc=kmalloc`): no bit positions, which
    /// would shift with the rows a kernel's configuration has.
    fn autorun(&self) -> Result {
        let with_controls = param!(controls) != 0;
        let serialized = self.state.run_lock.lock();
        let first = self.state.results.lock().len();
        self.state.with_lock_probes(|| {
            self.state.run_all(|cell| match cell {
                Cell::Alloc(_) => true,
                Cell::Control { .. } => with_controls,
            })
        })?;
        drop(serialized);
        self.state.summary(first);
        Ok(())
    }
}

impl Drop for GfpNoLocks {
    fn drop(&mut self) {
        // Let a run in progress stop at its next cell, then wait for it.
        self.state.stopping.store(true, Relaxed);
        drop(self.state.run_lock.lock());
    }
}
