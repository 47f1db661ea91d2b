// SPDX-License-Identifier: GPL-2.0

//! The detector's tracepoint probes, declared: one line per tracepoint
//! gives its name, its arguments (the tracepoint's `TP_PROTO`, in order)
//! and the safe `Detector` code that handles it. `probes!` generates the
//! `unsafe extern "C"` trampoline each registration needs, in one place,
//! and a list per lifetime; attaching is a loop over a list.

use crate::detector::Detector;
use crate::sys::{self, lockdep::MapRef};
use core::ffi::{c_char, c_int, c_uint, c_void};
use kernel::{bindings, ffi::c_ulong, prelude::*};

/// One probe: the tracepoint it attaches to, and its trampoline.
pub(crate) struct ProbeDef {
    pub(crate) name: &'static CStr,
    func: unsafe extern "C" fn(),
}

/// `LIST = [ tracepoint(arg: type, ...) => |d| handler, ... ]`: for each
/// line a trampoline `tracepoints::tracepoint` that gets its `Detector`
/// back as `d` and runs the handler, and the list `LIST` of them all.
macro_rules! probes {
    ($(
        $(#[$doc:meta])*
        $list:ident = [$(
            $(#[$tp_doc:meta])*
            $tp:ident($($arg:ident: $ty:ty),*) => |$d:ident| $handler:expr,
        )*];
    )*) => {
        /// The trampolines, named after their tracepoints.
        mod tracepoints {
            #[allow(unused_imports)]
            use super::*;
            $($(
                $(#[$tp_doc])*
                ///
                /// # Safety
                ///
                /// `data` must be the `Detector` registered with the probe,
                /// and the other arguments the tracepoint's own.
                #[allow(clippy::too_many_arguments, unused_variables)]
                pub(super) unsafe extern "C" fn $tp(data: *mut c_void, $($arg: $ty),*) {
                    // SAFETY: `data` is the `Detector` registered with this
                    // probe (`attach`), which outlives the probe; the
                    // tracepoint's pointer arguments are valid for the call.
                    let $d: &Detector = unsafe { &*data.cast::<Detector>() };
                    #[allow(unused_unsafe)]
                    // SAFETY: As above: the handler's pointers are the
                    // tracepoint's own, valid for the call.
                    unsafe {
                        $handler
                    }
                }
            )*)*
        }
        $(
            $(#[$doc])*
            pub(crate) const $list: &[ProbeDef] = &[$(
                ProbeDef {
                    name: kernel::c_str!(stringify!($tp)),
                    // SAFETY: Only called back by the tracepoint, with the
                    // arguments its line declares (`attach`).
                    func: unsafe {
                        core::mem::transmute::<
                            unsafe extern "C" fn(*mut c_void, $($ty),*),
                            unsafe extern "C" fn(),
                        >(tracepoints::$tp)
                    },
                },
            )*];
        )*
    };
}

probes! {
    /// Attached for the module's whole life: the kernel's reports and the
    /// allocator's events.
    LOAD_PROBES = [
        /// Every console line: the reports.
        console(text: *const c_char, len: usize) => |d| d.on_console(sys::console_text(text, len)),
        /// Fires under `zone->lock` (`__rmqueue_smallest()`).
        mm_page_alloc_zone_locked(page: *mut bindings::page, order: c_uint, migratetype: c_int, percpu_refill: c_int) => |d| d.on_event(&d.zone_locked),
        /// A block claimed or stolen from another migratetype, under `zone->lock`.
        mm_page_alloc_extfrag(page: *mut bindings::page, alloc_order: c_int, fallback_order: c_int, alloc_migratetype: c_int, fallback_migratetype: c_int) => |d| d.on_event(&d.extfrag),
        /// Just before `wake_up_interruptible(&pgdat->kswapd_wait)`.
        mm_vmscan_wakeup_kswapd(nid: c_int, zid: c_int, order: c_int, gfp: bindings::gfp_t) => |d| d.on_event(&d.kswapd_wakeups),
        /// A page `free_pcppages_bulk()` moves to the buddy lists, under `zone->lock`.
        mm_page_pcpu_drain(page: *mut bindings::page, order: c_uint, migratetype: c_int) => |d| d.on_pcpu_drain(),
        /// The end of every page allocation, failed ones too (NULL page).
        mm_page_alloc(page: *mut bindings::page, order: c_uint, gfp: bindings::gfp_t, migratetype: c_int) => |d| d.on_page_alloc(!page.is_null()),
        /// Every page freed to the page allocator (`free_pages_prepare()`).
        mm_page_free(page: *mut bindings::page, order: c_uint) => |d| d.on_event(&d.page_frees),
    ];
    /// Attached only while cells run (`State::with_lock_probes`): they fire
    /// on every lock operation, `kmalloc()` and timer of the system.
    RUN_PROBES = [
        /// Every lock acquisition, before `lock_acquire()` looks at `debug_locks`.
        lock_acquire(lock: *mut bindings::lockdep_map, subclass: c_uint, trylock: c_int, read: c_int, check: c_int, next_lock: *mut bindings::lockdep_map, ip: c_ulong) => |d| d.on_lock_acquire(MapRef::new(lock), trylock != 0, read.clamp(0, 3) as u8, ip as usize),
        /// Every lock release.
        lock_release(lock: *mut bindings::lockdep_map, ip: c_ulong) => |d| d.on_lock_release(MapRef::new(lock)),
        /// Every `kmalloc()` (`__do_kmalloc_node()` and friends), failed ones too.
        kmalloc(call_site: c_ulong, object: *const c_void, bytes_req: usize, bytes_alloc: usize, gfp: bindings::gfp_t, node: c_int) => |d| d.on_kmalloc(!object.is_null()),
        /// Every high-resolution timer started (`hrtimer_start_range_ns()`).
        hrtimer_start(timer: *mut bindings::hrtimer, mode: c_uint, was_armed: bool) => |d| d.on_hrtimer_start(mode, was_armed),
    ];
}

/// Attaches every probe of `list` with `detector` as its data, all or none;
/// `name_missing` logs a tracepoint the kernel lacks.
///
/// # Safety
///
/// `detector` must outlive the returned probes.
pub(crate) unsafe fn attach(
    list: &[ProbeDef],
    detector: &Detector,
    name_missing: bool,
) -> Result<KVec<sys::Probe>> {
    let data: *const c_void = core::ptr::from_ref(detector).cast();
    let mut probes = KVec::with_capacity(list.len(), GFP_KERNEL)?;
    for p in list {
        // SAFETY: `p.func` is the trampoline `probes!` generated from the
        // tracepoint's own arguments; the caller keeps `detector` alive.
        let probe = unsafe { sys::Probe::attach(p.name, p.func as *mut c_void, data) }
            .inspect_err(|_| {
                if name_missing {
                    pr_err!("the {} tracepoint is missing: the kernel needs CONFIG_TRACEPOINTS (e.g. CONFIG_FTRACE=y with CONFIG_ENABLE_DEFAULT_TRACERS=y)\n", p.name)
                }
            })?;
        probes.push(probe, GFP_KERNEL)?;
    }
    Ok(probes)
}
