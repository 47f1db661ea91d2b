// SPDX-License-Identifier: GPL-2.0

//! Tracepoint probes: attaching a probe to a builtin tracepoint found by
//! name (the probes themselves are declared in `probes.rs`).

use core::ffi::{c_char, c_void};
use kernel::{bindings, prelude::*};

/// A probe attached to a kernel tracepoint, found by name; detached on drop.
pub(crate) struct Probe {
    tp: *mut bindings::tracepoint,
    func: *mut c_void,
    data: *mut c_void,
}

// SAFETY: The registration is a pair of pointers the kernel keeps; it may
// be dropped from any thread.
unsafe impl Send for Probe {}
// SAFETY: `Probe` has no `&self` methods.
unsafe impl Sync for Probe {}

struct Lookup {
    name: &'static CStr,
    found: *mut bindings::tracepoint,
}

/// # Safety
///
/// `tp` must be a valid tracepoint and `priv_` a live `Lookup`.
unsafe extern "C" fn match_tracepoint(tp: *mut bindings::tracepoint, priv_: *mut c_void) {
    // SAFETY: `priv_` is the `Lookup` passed by `Probe::attach`, alive for
    // the whole iteration; `tp` is a valid builtin tracepoint.
    let (lookup, name) = unsafe {
        (
            &mut *priv_.cast::<Lookup>(),
            CStr::from_char_ptr((*tp).name),
        )
    };
    if name == lookup.name {
        lookup.found = tp;
    }
}

impl Probe {
    /// Attaches `func` to the builtin tracepoint `name`, with `data` as
    /// its first argument.
    ///
    /// # Safety
    ///
    /// `func` must have the tracepoint's probe signature, and `data` must
    /// stay valid until the returned `Probe` is dropped.
    pub(crate) unsafe fn attach(
        name: &'static CStr,
        func: *mut c_void,
        data: *const c_void,
    ) -> Result<Self> {
        let mut lookup = Lookup {
            name,
            found: core::ptr::null_mut(),
        };
        // SAFETY: The callback only reads the tracepoint and writes `lookup`.
        unsafe {
            bindings::for_each_kernel_tracepoint(Some(match_tracepoint), (&raw mut lookup).cast())
        };
        if lookup.found.is_null() {
            return Err(ENOENT);
        }
        let data = data.cast_mut();
        // SAFETY: The caller guarantees the signature and the lifetime of `data`.
        kernel::error::to_result(unsafe {
            bindings::tracepoint_probe_register(lookup.found, func, data)
        })?;
        Ok(Self {
            tp: lookup.found,
            func,
            data,
        })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: Registered by `attach` with exactly these arguments.
        unsafe { bindings::tracepoint_probe_unregister(self.tp, self.func, self.data) };
        // Wait for probes still running on other CPUs, so that `data`
        // may be freed after this (tracepoint_synchronize_unregister()).
        // SAFETY: Both only wait.
        unsafe {
            bindings::synchronize_srcu(&raw mut bindings::tracepoint_srcu);
            bindings::synchronize_rcu();
        }
    }
}

/// `const char *`, `size_t` of the `console` tracepoint, as bytes.
///
/// # Safety
///
/// `text` must point to `len` readable bytes for the returned lifetime.
pub(crate) unsafe fn console_text<'a>(text: *const c_char, len: usize) -> &'a [u8] {
    // SAFETY: Guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(text.cast(), len) }
}
