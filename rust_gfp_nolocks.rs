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
mod runner;
mod select;
mod spec;
mod sys;
mod tables;

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
    },
}

struct GfpNoLocks {
    // Field order is teardown order: probes go before the state they point to.
    _probes: [sys::Probe; 7],
    state: Pin<KBox<Scope<State>>>,
}

impl kernel::Module for GfpNoLocks {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let state = KBox::pin_init(
            Scope::dir(State::new()?, c"rust_gfp_nolocks", debugfs::populate),
            GFP_KERNEL,
        )?;
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
            unsafe { sys::Probe::attach(name, func, detector) }.inspect_err(|_| {
                pr_err!("the {} tracepoint is missing: the kernel needs CONFIG_TRACEPOINTS (e.g. CONFIG_FTRACE=y with CONFIG_ENABLE_DEFAULT_TRACERS=y)\n", name)
            })
        };
        let probes = [
            attach(c"console", console as *mut c_void)?,
            attach(c"mm_page_alloc_zone_locked", zone_locked as *mut c_void)?,
            attach(c"mm_page_alloc_extfrag", extfrag as *mut c_void)?,
            attach(c"mm_vmscan_wakeup_kswapd", wakeup_kswapd as *mut c_void)?,
            attach(c"mm_page_pcpu_drain", pcpu_drain as *mut c_void)?,
            attach(c"mm_page_alloc", page_alloc as *mut c_void)?,
            attach(c"mm_page_free", page_free as *mut c_void)?,
        ];
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
        // Only now may `run` start a cell: every probe is attached.
        state.ready.store(true, Relaxed);
        let module = Self {
            _probes: probes,
            state,
        };
        if param!(autorun) != 0 {
            module.autorun()?;
        }
        Ok(module)
    }
}

impl GfpNoLocks {
    /// Runs every cell (and the controls unless `controls=0`); a refused
    /// cell is recorded as such and the run goes on. Module parameters are
    /// numbers, so a selection by name goes through `run` instead
    /// (`all ctx=raw_spin_lock alloc=kmalloc`): no bit positions, which
    /// would shift with the rows a kernel's configuration has.
    fn autorun(&self) -> Result {
        let with_controls = param!(controls) != 0;
        let serialized = self.state.run_lock.lock();
        let first = self.state.results.lock().len();
        self.state.run_all(|cell| match cell {
            Cell::Alloc(_) => true,
            Cell::Control { .. } => with_controls,
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
