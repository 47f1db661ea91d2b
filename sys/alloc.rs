// SPDX-License-Identifier: GPL-2.0

//! Allocations: GFP masks, and pages or slab objects owned by an
//! `Allocation`, freed once, on drop (or handed to RCU by `rcu`).

use core::ffi::c_void;
use core::num::NonZeroUsize;
use core::ptr::NonNull;
use kernel::bindings;

pub(crate) type Gfp = bindings::gfp_t;

pub(crate) const GFP_KERNEL: Gfp = bindings::GFP_KERNEL;
pub(crate) const GFP_NOWAIT: Gfp = bindings::GFP_NOWAIT;
pub(crate) const GFP_ATOMIC: Gfp = bindings::GFP_ATOMIC;
pub(crate) const GFP_HIGH: Gfp = 1 << bindings::___GFP_HIGH_BIT;
pub(crate) const GFP_NOWARN: Gfp = bindings::__GFP_NOWARN;
/// `__GFP_NORETRY`, which the bindings lack as a constant (like `__GFP_HIGH`).
pub(crate) const GFP_NORETRY: Gfp = 1 << bindings::___GFP_NORETRY_BIT;
/// Highest order the per-cpu lists serve (`PAGE_ALLOC_COSTLY_ORDER`; with
/// THP the PMD order too, which the test kernels do not have).
pub(crate) const PCP_MAX_ORDER: u32 = bindings::PAGE_ALLOC_COSTLY_ORDER;
pub(crate) const MAX_ORDER: u32 = bindings::MAX_PAGE_ORDER;

/// Whether a mask may enter direct reclaim, i.e. really sleep
/// (`gfpflags_allow_blocking()`).
pub(crate) fn may_block(gfp: Gfp) -> bool {
    gfp & (1 << bindings::___GFP_DIRECT_RECLAIM_BIT) != 0
}

/// How the allocator handed the memory out, which decides how it is freed.
pub(super) enum Handle {
    /// From `__get_free_pages()`: a kernel virtual address.
    Addr(NonZeroUsize),
    /// From `alloc_pages_nolock()`: a `struct page`.
    Page(NonNull<bindings::page>),
    /// From `kmalloc()`: freed with `kfree()`.
    #[cfg(have_slab_rows)]
    Kmalloc(NonNull<c_void>),
    /// From `kmalloc_nolock()`: freed with `kfree_nolock()`, its pair,
    /// callable where it was (any context).
    #[cfg(have_kmalloc_nolock_rows)]
    KmallocNolock(NonNull<c_void>),
    /// From `kmem_cache_alloc()` of the `kfree_rcu()` rows' cache
    /// (`rcu::Cache`, which outlives every object: see there): freed with
    /// `kmem_cache_free()`, or handed to RCU by `rcu::kfree_rcu()` and
    /// friends, which take the value.
    #[cfg(have_slab_rows)]
    Cached {
        cache: NonNull<bindings::kmem_cache>,
        object: NonNull<c_void>,
    },
}

/// One allocation, owned: dropping the value frees it with the allocator's
/// own free function, so safe code can neither free it twice nor with the
/// wrong order or function. Neither `Copy` nor `Clone`. Freeing takes the
/// allocator's locks: drop these outside the atomic section (the runner
/// keeps them in a vector reserved beforehand and drops it after the
/// section), except in a freeing cell, whose section drops them on purpose.
pub(crate) struct Allocation {
    pub(super) handle: Handle,
    pub(super) order: u32,
}

// SAFETY: An `Allocation` owns its memory exclusively, and the kernel's free
// functions (`free_pages()`, `__free_pages()`, `kfree()`, `kfree_nolock()`,
// `kmem_cache_free()`, and the `kfree_rcu()` calls that hand an object to
// RCU) may run on any task and CPU, not only the allocating one.
unsafe impl Send for Allocation {}

impl Drop for Allocation {
    fn drop(&mut self) {
        match self.handle {
            // SAFETY: `addr` came from `get_free_pages_noprof()` with
            // `self.order` and this value owns it; drop runs once.
            Handle::Addr(addr) => unsafe {
                bindings::free_pages(addr.get() as kernel::ffi::c_ulong, self.order)
            },
            // SAFETY: `page` came from `alloc_pages_nolock_noprof()` with
            // `self.order` and this value owns it; drop runs once.
            Handle::Page(page) => unsafe { bindings::__free_pages(page.as_ptr(), self.order) },
            // SAFETY: `object` came from `krealloc_node_align()` and this
            // value owns it; drop runs once.
            #[cfg(have_slab_rows)]
            Handle::Kmalloc(object) => unsafe { bindings::kfree(object.as_ptr()) },
            // SAFETY: `object` came from `_kmalloc_nolock_noprof()` and this
            // value owns it; drop runs once.
            #[cfg(have_kmalloc_nolock_rows)]
            Handle::KmallocNolock(object) => unsafe { bindings::kfree_nolock(object.as_ptr()) },
            // SAFETY: `object` came from `kmem_cache_alloc_noprof()` of
            // `cache`, which is live until every cell has run (`rcu::Cache`);
            // this value owns it and drop runs once.
            #[cfg(have_slab_rows)]
            Handle::Cached { cache, object } => unsafe {
                bindings::kmem_cache_free(cache.as_ptr(), object.as_ptr())
            },
        }
    }
}

pub(crate) fn get_free_pages(gfp: Gfp, order: u32) -> Option<Allocation> {
    // SAFETY: Any mask and any order up to `MAX_ORDER` (checked by the
    // spec parser) are valid arguments; failure returns 0.
    let addr = unsafe { bindings::get_free_pages_noprof(gfp, order) };
    Some(Allocation {
        handle: Handle::Addr(NonZeroUsize::new(addr as usize)?),
        order,
    })
}

#[cfg(have_alloc_pages_nolock)]
pub(crate) fn alloc_pages_nolock(gfp: Gfp, order: u32) -> Option<Allocation> {
    // SAFETY: Callable from any context, by design; returns NULL rather
    // than spinning or sleeping.
    let page = unsafe { bindings::alloc_pages_nolock_noprof(gfp, bindings::NUMA_NO_NODE, order) };
    Some(Allocation {
        handle: Handle::Page(NonNull::new(page)?),
        order,
    })
}

/// Size of the slab rows' objects: the `kmalloc-64` cache, whose slabs are
/// order 0 (64 objects to a page).
pub(crate) const SLAB_OBJECT_SIZE: usize = 64;
/// Objects in one slab of that cache.
pub(crate) const SLAB_OBJECTS_PER_PAGE: usize = (1 << kernel::page::PAGE_SHIFT) / SLAB_OBJECT_SIZE;

/// `kmalloc(SLAB_OBJECT_SIZE, gfp)`. Through `krealloc(NULL, ...)`, the
/// kernel crate's `Kmalloc` path (`__do_kmalloc_node()`, as `kmalloc()`
/// with a size not known at compile time), whose helper takes any mask
/// where `kernel::alloc::Flags` cannot express `0` or `__GFP_HIGH`. The
/// order is the spec's, always 0 for slab rows.
#[cfg(have_slab_rows)]
pub(crate) fn kmalloc(gfp: Gfp, order: u32) -> Option<Allocation> {
    // SAFETY: A NULL object asks for a new allocation; any mask is valid;
    // failure returns NULL.
    let object = unsafe {
        bindings::krealloc_node_align(
            core::ptr::null(),
            SLAB_OBJECT_SIZE,
            1,
            gfp,
            bindings::NUMA_NO_NODE,
        )
    };
    Some(Allocation {
        handle: Handle::Kmalloc(NonNull::new(object)?),
        order,
    })
}

/// `kmalloc_nolock(SLAB_OBJECT_SIZE, gfp, NUMA_NO_NODE)`: any context, NMI
/// included; returns NULL rather than spin or sleep. Kbuild finds it
/// exported; with `CONFIG_KMALLOC_PARTITION_CACHES` it takes a token this
/// binding lacks, and the rows are absent.
#[cfg(have_kmalloc_nolock_rows)]
pub(crate) fn kmalloc_nolock(gfp: Gfp, order: u32) -> Option<Allocation> {
    // SAFETY: Callable from any context by design, with the masks the spec
    // parser lets through (`0`); failure returns NULL.
    let object =
        unsafe { bindings::_kmalloc_nolock_noprof(SLAB_OBJECT_SIZE, gfp, bindings::NUMA_NO_NODE) };
    Some(Allocation {
        handle: Handle::KmallocNolock(NonNull::new(object)?),
        order,
    })
}
