// SPDX-License-Identifier: GPL-2.0

//! NMI on this CPU (x86): a self-NMI through the local APIC and an
//! `NMI_LOCAL` handler that runs the body.

use super::{current_cpu, hz, jiffies};
use core::ffi::{c_int, c_uint};
use kernel::{
    bindings,
    prelude::*,
    sync::atomic::{Acquire, Atomic, Full, Relaxed, Release},
    types::Opaque,
};

/// `struct nmiaction` of `arch/x86/include/asm/nmi.h`, which the bindings
/// do not include; `Kbuild` checks that the tree declares these fields in
/// this order (`have_self_nmi`).
#[repr(C)]
struct NmiAction {
    list: bindings::list_head,
    handler: Option<unsafe extern "C" fn(c_uint, *mut bindings::pt_regs) -> c_int>,
    max_duration: u64,
    flags: kernel::ffi::c_ulong,
    name: *const kernel::ffi::c_char,
}

extern "C" {
    fn __register_nmi_handler(type_: c_uint, action: *mut NmiAction) -> c_int;
    fn unregister_nmi_handler(type_: c_uint, name: *const kernel::ffi::c_char);
    /// `static_call(apic_call_send_IPI_mask)`, whose trampoline the kernel
    /// exports for modules (`__apic_send_IPI_mask()` is inline).
    fn __SCT__apic_call_send_IPI_mask(mask: *const bindings::cpumask, vector: c_int);
}

const NMI_LOCAL: c_uint = 0;
const NMI_DONE: c_int = 0;
const NMI_HANDLED: c_int = 1;
const NMI_HANDLER_NAME: &CStr = c"rust_gfp_nolocks";

/// The body an NMI is to run: the address of a live `NmiCall`, or 0.
static NMI_PENDING: Atomic<usize> = Atomic::new(0);
/// The CPU the pending body's NMI was sent to: the kernel calls every
/// `NMI_LOCAL` handler for every NMI, on every CPU.
static NMI_TARGET: Atomic<u32> = Atomic::new(u32::MAX);
/// NMIs this module sent that no handler run has accounted for yet: a late
/// one (its body taken back, or run by another NMI on that CPU) is ours,
/// claimed, and not reported as an unknown NMI.
static NMI_SENT: Atomic<u32> = Atomic::new(0);

/// Takes one of `NMI_SENT`, never below zero; whether there was one.
fn nmi_sent_take() -> bool {
    let mut sent = NMI_SENT.load(Relaxed);
    while sent > 0 {
        match NMI_SENT.cmpxchg(sent, sent - 1, Full) {
            Ok(_) => return true,
            Err(now) => sent = now,
        }
    }
    false
}

struct NmiCall<'a> {
    f: &'a mut dyn FnMut(),
    done: Atomic<bool>,
}

/// # Safety
///
/// Called by the kernel's NMI code only, once registered.
unsafe extern "C" fn nmi_trampoline(_type: c_uint, _regs: *mut bindings::pt_regs) -> c_int {
    if current_cpu() != NMI_TARGET.load(Acquire) {
        return NMI_DONE;
    }
    let call = NMI_PENDING.xchg(0, Full);
    if call == 0 {
        // Not ours, or a late one of ours.
        return if nmi_sent_take() {
            NMI_HANDLED
        } else {
            NMI_DONE
        };
    }
    nmi_sent_take();
    // SAFETY: `call` is the address of the `NmiCall` that `NmiHandler::run`
    // published; taking it from `NMI_PENDING` makes this handler its only
    // user, and `run` does not return before `done` is set.
    let call = unsafe { &mut *(call as *mut NmiCall<'_>) };
    (call.f)();
    call.done.store(true, Release);
    NMI_HANDLED
}

/// An `NMI_LOCAL` handler that runs a body sent to it by a self-NMI,
/// registered while this value lives.
#[pin_data(PinnedDrop)]
pub(crate) struct NmiHandler {
    #[pin]
    action: Opaque<NmiAction>,
    registered: bool,
}

// SAFETY: The action is only handed to the kernel, which serialises its use.
unsafe impl Send for NmiHandler {}
// SAFETY: `run` keeps its body in statics, one at a time: its only caller,
// the runner, serialises cells under `run_lock`.
unsafe impl Sync for NmiHandler {}

impl NmiHandler {
    /// Registers the handler; on failure the row's cells report that their
    /// body did not run.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            action <- Opaque::ffi_init(|slot: *mut NmiAction| {
                // SAFETY: `slot` is valid for writes; `list` is made an
                // empty list once pinned, then linked by the registration.
                unsafe {
                    slot.write(NmiAction {
                        list: core::mem::zeroed(),
                        handler: Some(nmi_trampoline),
                        max_duration: 0,
                        flags: 0,
                        name: NMI_HANDLER_NAME.as_char_ptr(),
                    })
                }
            }),
            registered: false,
        })
        .pin_chain(|this| {
            // SAFETY: Only `registered` is written below; nothing is moved.
            let this = unsafe { this.get_unchecked_mut() };
            let action = this.action.get();
            // SAFETY: The action is initialised and pinned, so its list head
            // can point at itself (`LIST_HEAD_INIT`, an unlinked action), and
            // it stays registered until `drop` unregisters it.
            let ret = unsafe {
                let list = &raw mut (*action).list;
                (*list).next = list;
                (*list).prev = list;
                __register_nmi_handler(NMI_LOCAL, action)
            };
            this.registered = ret == 0;
            if ret != 0 {
                pr_warn!(
                    "cannot register an NMI handler ({}): the nmi row will not run\n",
                    ret
                );
            }
            Ok(())
        })
    }

    /// Runs `f` in an NMI on the CPU this task is on when called (it may
    /// migrate while it waits) and returns once it has run; gives up after a
    /// second if the NMI never came (then `f` never runs). Only code that
    /// is legal in NMI may be in `f`. Callers run one body at a time.
    pub(crate) fn run(&self, f: &mut dyn FnMut()) {
        if !self.registered {
            return;
        }
        let call = NmiCall {
            f,
            done: Atomic::new(false),
        };
        let addr = &raw const call as usize;
        // SAFETY: An all-zero cpumask is empty.
        let mut mask: bindings::cpumask = unsafe { core::mem::zeroed() };
        let cpu = current_cpu();
        let bits = 8 * core::mem::size_of::<kernel::ffi::c_ulong>();
        mask.bits[cpu as usize / bits] |= 1 << (cpu as usize % bits);
        NMI_PENDING.store(addr, Release);
        NMI_TARGET.store(cpu, Release);
        NMI_SENT.fetch_add(1, Full);
        // SAFETY: `mask` names an online CPU (this one, or the one this task
        // just left); NMI_VECTOR is sent with the NMI delivery mode.
        unsafe { __SCT__apic_call_send_IPI_mask(&mask, bindings::NMI_VECTOR as c_int) };
        let deadline = jiffies().wrapping_add(hz());
        while !call.done.load(Acquire) {
            if (jiffies().wrapping_sub(deadline) as isize) > 0
                && NMI_PENDING.cmpxchg(addr, 0, Full).is_ok()
            {
                // Taken back before any handler took it: `f` never runs.
                pr_warn!("no NMI arrived within a second: the cell's body did not run\n");
                return;
            }
            core::hint::spin_loop();
        }
    }
}

#[pinned_drop]
impl PinnedDrop for NmiHandler {
    fn drop(self: Pin<&mut Self>) {
        if self.registered {
            // SAFETY: Registered by `new`; `unregister_nmi_handler()` waits
            // (synchronize_rcu()) until no NMI runs the handler any more.
            unsafe { unregister_nmi_handler(NMI_LOCAL, NMI_HANDLER_NAME.as_char_ptr()) };
        }
    }
}
