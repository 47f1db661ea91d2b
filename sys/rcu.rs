// SPDX-License-Identifier: GPL-2.0

//! The `kfree_rcu()` rows' corner: a private slab cache whose per-cpu
//! sheaves and barn the module alone uses, and the three calls that hand
//! one of its objects to RCU (`kvfree_call_rcu()` with and without a head,
//! `kfree_call_rcu_nolock()`).
//!
//! A private cache because its state decides the path: `kvfree_call_rcu()`
//! puts the object into this CPU's `rcu_free` sheaf of the object's own
//! cache (`__kfree_rcu_sheaf()`), and a cache nobody else frees to has a
//! state the module can set up: `reset()` leaves every CPU without an
//! `rcu_free` or spare sheaf and the barn empty (`kmem_cache_shrink()`
//! flushes the per-cpu sheaves and `barn_shrink()` frees the barn's).

use super::alloc::{Allocation, Handle};
use super::Gfp;
use core::{
    mem::ManuallyDrop,
    ptr::{null_mut, NonNull},
};
use kernel::{
    bindings,
    ffi::c_void,
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

/// Bytes of an object: room for its `struct kvfree_rcu_head` (a
/// `struct rcu_head` before 7.3) at offset 0.
pub(crate) const OBJECT_SIZE: u32 = 64;

/// The capacity the cache asks for. `calculate_sheaf_capacity()` (7.2 and
/// 7.3) computes 60 for a 64-byte cache (its `size < 256` case: 32 + 60 * 8
/// bytes fill a `kmalloc-512` sheaf exactly) and returns the larger of that
/// and the asked capacity: 64 (a 544-byte sheaf, from `kmalloc-1k`), a
/// number the setups count with. A wrong count shows: each cell names the
/// path it took from the kernel's events.
pub(crate) const SHEAF_CAPACITY: u32 = 64;

/// `MAX_FULL_SHEAVES` (`mm/slub.c`, 7.2 and 7.3): past this many full
/// sheaves in the barn, `rcu_free_sheaf()` flushes a full `rcu_free` sheaf
/// and puts it into the barn empty.
pub(crate) const BARN_MAX_FULL_SHEAVES: u32 = 10;

/// The cache, while `Cache` lives: read by [`alloc`], whose table entry
/// takes no state.
static CACHE: Atomic<usize> = Atomic::new(0);

/// The private cache, created at load and destroyed at unload. Its
/// destruction waits for every object handed to RCU
/// (`kvfree_rcu_barrier_on_cache()`), and the kernel warns if one is
/// still allocated ("Slab cache still has objects").
pub(crate) struct Cache(NonNull<bindings::kmem_cache>);

// SAFETY: A `kmem_cache` may be used and destroyed from any task.
unsafe impl Send for Cache {}
// SAFETY: `Cache` has no `&self` method: cells reach the cache through
// `CACHE`, in calls the slab allocator serializes itself.
unsafe impl Sync for Cache {}

impl Cache {
    pub(crate) fn new() -> Result<Self> {
        let mut args = bindings::kmem_cache_args {
            sheaf_capacity: SHEAF_CAPACITY,
            ..Default::default()
        };
        // SLAB_NO_MERGE: merged into another 64-byte cache, the sheaves
        // would be shared with every user of that cache.
        let flags = 1 << bindings::_slab_flag_bits__SLAB_NO_MERGE;
        // SAFETY: The name is a static C string and `args` lives for the call.
        let cache = unsafe {
            bindings::__kmem_cache_create_args(
                c"rust_gfp_nolocks_rcu".as_char_ptr(),
                OBJECT_SIZE,
                &mut args,
                flags,
            )
        };
        let cache = NonNull::new(cache).ok_or(ENOMEM)?;
        CACHE.store(cache.as_ptr() as usize, Relaxed);
        Ok(Self(cache))
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        CACHE.store(0, Relaxed);
        // SAFETY: Created by `new`; every object of it was freed or handed
        // to RCU, which `kmem_cache_destroy()` waits for.
        unsafe { bindings::kmem_cache_destroy(self.0.as_ptr()) };
    }
}

/// The cache, if it lives.
fn cache() -> Option<NonNull<bindings::kmem_cache>> {
    NonNull::new(CACHE.load(Relaxed) as *mut bindings::kmem_cache)
}

/// Waits for every RCU callback queued so far (an `rcu_free` sheaf handed
/// to `call_rcu()` goes to the barn in its callback), then flushes every
/// CPU's sheaves of the cache and empties its barn. Process context.
pub(crate) fn reset() {
    rcu_barrier();
    if let Some(cache) = cache() {
        // SAFETY: May sleep, which the caller allows; the cache is live
        // while `CACHE` holds it (cells run before `Cache` is dropped).
        unsafe { bindings::kmem_cache_shrink(cache.as_ptr()) };
    }
}

/// Waits for the RCU callbacks queued so far. Process context.
pub(crate) fn rcu_barrier() {
    // SAFETY: Only waits.
    unsafe { bindings::rcu_barrier() };
}

/// An object of the private cache (`kmem_cache_alloc()`), `None` without
/// the cache. The order is the spec's, always 0.
pub(crate) fn alloc(gfp: Gfp, order: u32) -> Option<Allocation> {
    let cache = cache()?;
    // SAFETY: The cache is live while `CACHE` holds it; any mask is valid.
    let object = unsafe { bindings::kmem_cache_alloc_noprof(cache.as_ptr(), gfp) };
    Some(Allocation {
        handle: Handle::Cached {
            cache,
            object: NonNull::new(object)?,
        },
        order,
    })
}

/// Hands an object of the private cache to RCU with `call`; any other
/// allocation is freed at once, as dropped.
fn hand_to_rcu(allocation: Allocation, call: impl FnOnce(*mut c_void)) {
    let object = match &allocation.handle {
        Handle::Cached { object, .. } => *object,
        // Not handed to RCU: freed as its own allocator frees it.
        _ => return drop(allocation),
    };
    // RCU frees the object now: the value must not.
    let _ = ManuallyDrop::new(allocation);
    call(object.as_ptr());
}

/// `kfree_rcu(p, head)`: `kvfree_call_rcu()` with the head at offset 0.
pub(crate) fn kfree_rcu(allocation: Allocation) {
    hand_to_rcu(allocation, |object| {
        // SAFETY: `object` is a live slab object this call takes over (the
        // value is not dropped); its head lies within it, at offset 0.
        unsafe { bindings::kvfree_call_rcu(object.cast(), object) }
    });
}

/// `kvfree_rcu_mightsleep(p)`: `kvfree_call_rcu()` without a head, which
/// starts with `might_sleep()` and may allocate a page with `GFP_KERNEL`
/// and wait for a grace period inline.
pub(crate) fn kvfree_rcu_mightsleep(allocation: Allocation) {
    hand_to_rcu(allocation, |object| {
        // SAFETY: As in `kfree_rcu`; a NULL head asks for the headless form.
        unsafe { bindings::kvfree_call_rcu(null_mut(), object) }
    });
}

/// `kfree_rcu_nolock(p, head)`: `kfree_call_rcu_nolock()`, for any context.
#[cfg(have_kfree_rcu_nolock)]
pub(crate) fn kfree_rcu_nolock(allocation: Allocation) {
    hand_to_rcu(allocation, |object| {
        // SAFETY: As in `kfree_rcu`.
        unsafe { bindings::kfree_call_rcu_nolock(object.cast(), object) }
    });
}
