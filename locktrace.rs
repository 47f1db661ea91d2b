// SPDX-License-Identifier: GPL-2.0

//! The lock trace: every lock (every lockdep map: `rcu_read_lock`,
//! `fs_reclaim`, local locks, wait-type override maps) a cell's own context
//! acquires, seen on lockdep's `lock_acquire` and `lock_release`
//! tracepoints. `lock_acquire()` calls its tracepoint before it looks at
//! `debug_locks`, so the trace is the same whether lockdep is still armed
//! or has turned itself off after a report.
//!
//! Each acquisition is judged where it happens, by the kernel's own rules
//! read from the kernel's own data (the map's wait types, the context's
//! counts): lockdep's `check_wait_context()` over the locks this trace saw
//! the context take and not yet release, and the sleep check a sleeping
//! lock makes (`rtlock_might_resched()` for a PREEMPT_RT `spinlock_t` or
//! `rwlock_t`, `might_sleep()` for a mutex). These are the module's
//! verdicts, kept apart from the reports the kernel printed.

use crate::sys::lockdep::{
    ContextState, MapRef, LOCK_NORMAL, LOCK_PERCPU, LOCK_WAIT_OVERRIDE, WAIT_CONFIG, WAIT_SLEEP,
    WAIT_SPIN,
};
use crate::sys::{self};
use crate::text::{Name, TextSlot, NAME_LEN};
use core::fmt;
use kernel::{
    alloc::KVec,
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

/// Distinct acquisitions kept per cell; more are counted in `dropped`.
pub(crate) const MAX_LOCKS: usize = 24;
/// Locks held at once that the trace follows (lockdep's `MAX_LOCK_DEPTH`).
const MAX_HELD: usize = 48;

/// What one acquisition was, and what the rules said of it, packed in a
/// word so that the probe stores it with one atomic write.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Acquisition {
    pub(crate) inner: u8,
    pub(crate) outer: u8,
    pub(crate) lock_type: u8,
    pub(crate) trylock: bool,
    /// 0 exclusive, 1 shared, 2 shared and recursive (`rcu_read_lock`).
    pub(crate) read: u8,
    /// The wait type the context allowed when this lock came: lockdep's
    /// `curr_inner`, from `task_wait_context()` and the held locks.
    pub(crate) allowed: u8,
    pub(crate) irq_context: u8,
    pub(crate) irqs_disabled: bool,
    pub(crate) preempt_count: u32,
    pub(crate) rcu_depth: u8,
    /// Lockdep checked acquisitions here (not `lockdep_off()`, as in NMI).
    pub(crate) lockdep_checks: bool,
    /// Lockdep was armed (`debug_locks`): it would report this itself.
    pub(crate) armed: bool,
    /// `check_wait_context()` fails: "BUG: Invalid wait context".
    pub(crate) invalid_wait: bool,
    /// A sleeping lock where sleeping is not allowed: "BUG: sleeping
    /// function called from invalid context".
    pub(crate) sleeps: bool,
}

impl Acquisition {
    fn pack(&self) -> u64 {
        u64::from(self.inner)
            | u64::from(self.outer) << 4
            | u64::from(self.lock_type) << 8
            | u64::from(self.trylock) << 12
            | u64::from(self.read) << 13
            | u64::from(self.allowed) << 16
            | u64::from(self.irq_context) << 20
            | u64::from(self.irqs_disabled) << 22
            | u64::from(self.lockdep_checks) << 23
            | u64::from(self.armed) << 24
            | u64::from(self.invalid_wait) << 25
            | u64::from(self.sleeps) << 26
            | u64::from(self.rcu_depth.min(31)) << 27
            | u64::from(self.preempt_count) << 32
    }

    fn unpack(w: u64) -> Self {
        let bits = |shift: u32, width: u32| ((w >> shift) & ((1 << width) - 1)) as u8;
        Self {
            inner: bits(0, 4),
            outer: bits(4, 4),
            lock_type: bits(8, 4),
            trylock: bits(12, 1) != 0,
            read: bits(13, 2),
            allowed: bits(16, 4),
            irq_context: bits(20, 2),
            irqs_disabled: bits(22, 1) != 0,
            lockdep_checks: bits(23, 1) != 0,
            armed: bits(24, 1) != 0,
            invalid_wait: bits(25, 1) != 0,
            sleeps: bits(26, 1) != 0,
            rcu_depth: bits(27, 5),
            preempt_count: (w >> 32) as u32,
        }
    }

    /// Entries merge when the lock and everything the rules judged agree
    /// (an entry keeps the counts and interrupt state of its first
    /// acquisition, and whether lockdep was armed then).
    fn same_kind(&self, other: &Self) -> bool {
        let judged = |a: &Self| Self {
            armed: false,
            preempt_count: 0,
            rcu_depth: 0,
            irqs_disabled: false,
            ..*a
        };
        judged(self) == judged(other)
    }
}

/// `check_wait_context()`'s outer wait type: the inner one if unset.
fn outer_of(inner: u8, outer: u8) -> u8 {
    if outer == 0 {
        inner
    } else {
        outer
    }
}

/// Whether acquiring a lock of these types runs a sleep check first, and
/// how it counts RCU: PREEMPT_RT's `spinlock_t`, `rwlock_t` and
/// `local_lock_t` (`LD_WAIT_CONFIG`, normal or per-cpu type: `local_lock()`
/// is `spin_lock()` there) run `rtlock_might_resched()`; a lock that may
/// sleep anywhere (`LD_WAIT_SLEEP`: mutexes, semaphores) runs
/// `might_sleep()`. Where `LD_WAIT_CONFIG` equals `LD_WAIT_SPIN` (no
/// `CONFIG_PROVE_RAW_LOCK_NESTING`) a `spinlock_t` cannot be told from a
/// raw one, and only the second rule applies.
fn sleep_check_reports(inner: u8, outer: u8, lock_type: u8, state: &ContextState) -> bool {
    let outer = outer_of(inner, outer);
    let rtlock = cfg!(CONFIG_PREEMPT_RT)
        && WAIT_CONFIG != WAIT_SPIN
        && outer == WAIT_CONFIG
        && (lock_type == LOCK_NORMAL || lock_type == LOCK_PERCPU);
    if rtlock {
        state.rtlock_reports()
    } else {
        lock_type == LOCK_NORMAL && outer >= WAIT_SLEEP && state.might_sleep_reports()
    }
}

/// What the kernel's rules say of taking a lock of these types here, with
/// the context allowing `allowed` (lockdep's `curr_inner`): `(invalid wait
/// context, sleeps where it may not)`. Lockdep skips trylocks and what it
/// does not check (`lockdep_off()`), and checks wait types only with
/// `CONFIG_PROVE_LOCKING` (else `check_wait_context()` is empty); a trylock
/// never sleeps.
pub(crate) fn verdict(
    (inner, outer, lock_type): (u8, u8, u8),
    trylock: bool,
    state: &ContextState,
    allowed: u8,
) -> (bool, bool) {
    let invalid_wait = cfg!(CONFIG_PROVE_LOCKING)
        && !state.lockdep_off
        && inner != 0
        && !trylock
        && outer_of(inner, outer) > allowed;
    let sleeps = !trylock && sleep_check_reports(inner, outer, lock_type, state);
    (invalid_wait, sleeps)
}

/// `verdict()` where the lock is being acquired (the tracepoint), not
/// where its caller stood: a sleeping lock's `might_sleep()` runs before
/// the acquisition, and on `!PREEMPT_RT` `mutex_lock()` disables
/// preemption in between (`__mutex_lock_common()`), so the count seen here
/// is not the one the check saw. The trace derives no sleep from such a
/// lock there (the kernel's own report answers); an rtlock's check and its
/// acquisition see the same state.
fn verdict_at_acquire(
    types: (u8, u8, u8),
    trylock: bool,
    state: &ContextState,
    allowed: u8,
) -> (bool, bool) {
    let (invalid_wait, sleeps) = verdict(types, trylock, state, allowed);
    let sleeping_lock = outer_of(types.0, types.1) >= WAIT_SLEEP;
    (
        invalid_wait,
        sleeps && (cfg!(CONFIG_PREEMPT_RT) || !sleeping_lock),
    )
}

struct Entry {
    map: Atomic<usize>,
    ip: Atomic<usize>,
    facts: Atomic<u64>,
    count: Atomic<u32>,
    name: TextSlot,
}

/// A lock the traced context holds: what `check_wait_context()` reads.
struct Held {
    map: Atomic<usize>,
    /// inner wait type | override << 8 | irq context << 9.
    packed: Atomic<u32>,
}

/// One cell's trace. Written by the cell's own context only (the
/// detector's attribution), one acquisition at a time.
pub(crate) struct LockTrace {
    entries: [Entry; MAX_LOCKS],
    len: Atomic<u32>,
    dropped: Atomic<u32>,
    /// Of the dropped acquisitions, those a rule rejected: still counted.
    dropped_invalid_wait: Atomic<u32>,
    dropped_sleeps: Atomic<u32>,
    held: [Held; MAX_HELD],
    held_len: Atomic<u32>,
}

/// One entry of a cell's trace, copied out.
pub(crate) struct LockSeen {
    pub(crate) name: Name,
    pub(crate) ip: usize,
    pub(crate) count: u32,
    pub(crate) facts: Acquisition,
}

impl LockTrace {
    pub(crate) fn new() -> Self {
        Self {
            entries: [const {
                Entry {
                    map: Atomic::new(0),
                    ip: Atomic::new(0),
                    facts: Atomic::new(0),
                    count: Atomic::new(0),
                    name: TextSlot::new(),
                }
            }; MAX_LOCKS],
            len: Atomic::new(0),
            dropped: Atomic::new(0),
            dropped_invalid_wait: Atomic::new(0),
            dropped_sleeps: Atomic::new(0),
            held: [const {
                Held {
                    map: Atomic::new(0),
                    packed: Atomic::new(0),
                }
            }; MAX_HELD],
            held_len: Atomic::new(0),
        }
    }

    pub(crate) fn clear(&self) {
        for e in &self.entries {
            e.name.clear();
        }
        self.len.store(0, Relaxed);
        self.dropped.store(0, Relaxed);
        self.dropped_invalid_wait.store(0, Relaxed);
        self.dropped_sleeps.store(0, Relaxed);
        self.held_len.store(0, Relaxed);
    }

    /// `check_wait_context()`'s `curr_inner`: the context's own wait type,
    /// lowered by every lock held in the same irq context (an override map
    /// raising it again).
    fn allowed(&self, state: &ContextState) -> u8 {
        let n = (self.held_len.load(Relaxed) as usize).min(MAX_HELD);
        let irq_context = u32::from(state.irq_context());
        let mut start = n;
        while start > 0 && self.held[start - 1].packed.load(Relaxed) >> 9 == irq_context {
            start -= 1;
        }
        let mut allowed = state.wait_context();
        for h in &self.held[start..n] {
            let packed = h.packed.load(Relaxed);
            let inner = (packed & 0xff) as u8;
            if inner != 0 {
                allowed = if packed & 0x100 != 0 {
                    inner
                } else {
                    allowed.min(inner)
                };
            }
        }
        allowed
    }

    /// The running context's state and the wait type it allows now, with
    /// the locks this trace saw it take.
    pub(crate) fn allowed_now(&self) -> (ContextState, u8) {
        let state = sys::lockdep::context_state();
        let allowed = self.allowed(&state);
        (state, allowed)
    }

    /// The probe on `lock_acquire`, for the cell's own context, which
    /// lockdep sees in one of `irq_contexts` (a bit per `task_irq_context()`
    /// value): an interrupt's exit path runs with the task's preempt count
    /// but in lockdep's hard irq context (`irq_exit_rcu()` leaves it last),
    /// and what it takes there is the interrupt's, not the cell's.
    pub(crate) fn on_acquire(
        &self,
        map: MapRef<'_>,
        (trylock, read): (bool, u8),
        ip: usize,
        irq_contexts: u8,
    ) {
        let state = sys::lockdep::context_state();
        // Lockdep's own work (a report it prints): it checks none of it;
        // nor a lock keyed not to be tracked, which it does not hold.
        if state.in_lockdep || map.untracked() || irq_contexts & (1 << state.irq_context()) == 0 {
            return;
        }
        // The state is the caller's; the stack is updated with nothing in
        // between that could take a lock (see `without_interrupts()`).
        sys::lockdep::without_interrupts(|| self.judge_and_push(map, (trylock, read), ip, &state));
    }

    fn judge_and_push(
        &self,
        map: MapRef<'_>,
        (trylock, read): (bool, u8),
        ip: usize,
        state: &ContextState,
    ) {
        let (inner, outer, lock_type) = map.wait_types();
        let allowed = self.allowed(state);
        let (invalid_wait, sleeps) =
            verdict_at_acquire((inner, outer, lock_type), trylock, state, allowed);
        let facts = Acquisition {
            inner,
            outer,
            lock_type,
            trylock,
            read,
            allowed,
            irq_context: state.irq_context(),
            irqs_disabled: state.irqs_disabled,
            preempt_count: state.preempt_count,
            rcu_depth: state.rcu_depth.min(31) as u8,
            lockdep_checks: !state.lockdep_off,
            armed: sys::lockdep_armed(),
            invalid_wait,
            sleeps,
        };
        self.push_held(map.addr(), inner, lock_type, state.irq_context());
        self.record(map, facts, ip);
    }

    fn push_held(&self, map: usize, inner: u8, lock_type: u8, irq_context: u8) {
        let n = self.held_len.load(Relaxed) as usize;
        if n < MAX_HELD {
            let overrides = u32::from(lock_type == LOCK_WAIT_OVERRIDE);
            self.held[n].map.store(map, Relaxed);
            self.held[n].packed.store(
                u32::from(inner) | overrides << 8 | u32::from(irq_context) << 9,
                Relaxed,
            );
        }
        // Past MAX_HELD (lockdep itself stops there) only the depth counts.
        self.held_len.store(n as u32 + 1, Relaxed);
    }

    fn record(&self, map: MapRef<'_>, facts: Acquisition, ip: usize) {
        let len = (self.len.load(Relaxed) as usize).min(MAX_LOCKS);
        for e in &self.entries[..len] {
            if e.map.load(Relaxed) == map.addr()
                && Acquisition::unpack(e.facts.load(Relaxed)).same_kind(&facts)
            {
                e.count.fetch_add(1, Relaxed);
                return;
            }
        }
        let Some(e) = self.entries.get(len) else {
            self.dropped.fetch_add(1, Relaxed);
            self.dropped_invalid_wait
                .fetch_add(u32::from(facts.invalid_wait), Relaxed);
            self.dropped_sleeps
                .fetch_add(u32::from(facts.sleeps), Relaxed);
            return;
        };
        e.map.store(map.addr(), Relaxed);
        e.ip.store(ip, Relaxed);
        e.facts.store(facts.pack(), Relaxed);
        e.count.store(1, Relaxed);
        e.name.clear();
        e.name.push(map.name(NAME_LEN));
        self.len.store(len as u32 + 1, Relaxed);
    }

    /// The probe on `lock_release`: the lock leaves the held stack (the
    /// most recent acquisition of that map, as lockdep finds it).
    pub(crate) fn on_release(&self, map: MapRef<'_>, irq_contexts: u8) {
        let state = sys::lockdep::context_state();
        if state.in_lockdep || irq_contexts & (1 << state.irq_context()) == 0 {
            return;
        }
        sys::lockdep::without_interrupts(|| self.pop_held(map));
    }

    fn pop_held(&self, map: MapRef<'_>) {
        let n = self.held_len.load(Relaxed) as usize;
        let kept = n.min(MAX_HELD);
        let Some(i) = (0..kept)
            .rev()
            .find(|&i| self.held[i].map.load(Relaxed) == map.addr())
        else {
            // Taken before the cell began, or past MAX_HELD.
            if n > MAX_HELD {
                self.held_len.store(n as u32 - 1, Relaxed);
            }
            return;
        };
        for j in i..kept - 1 {
            let (map, packed) = (&self.held[j + 1].map, &self.held[j + 1].packed);
            self.held[j].map.store(map.load(Relaxed), Relaxed);
            self.held[j].packed.store(packed.load(Relaxed), Relaxed);
        }
        self.held_len.store(n as u32 - 1, Relaxed);
    }

    /// The cell's trace, in order of first acquisition, once the cell ended.
    pub(crate) fn snapshot(&self) -> Result<LockRecord> {
        let len = (self.len.load(Relaxed) as usize).min(MAX_LOCKS);
        let mut seen = KVec::with_capacity(len, GFP_KERNEL)?;
        for e in &self.entries[..len] {
            seen.push(
                LockSeen {
                    name: e.name.get(),
                    ip: e.ip.load(Relaxed),
                    count: e.count.load(Relaxed),
                    facts: Acquisition::unpack(e.facts.load(Relaxed)),
                },
                GFP_KERNEL,
            )?;
        }
        // Every lock the section took, it released: a lock still held here
        // means a release the trace did not see.
        let held = (self.held_len.load(Relaxed) as usize).min(MAX_HELD);
        let left = self.held[..held]
            .iter()
            .filter_map(|h| {
                let map = h.map.load(Relaxed);
                self.entries[..len]
                    .iter()
                    .position(|e| e.map.load(Relaxed) == map)
            })
            .next();
        Ok(LockRecord {
            seen,
            dropped: self.dropped.load(Relaxed),
            dropped_invalid_wait: self.dropped_invalid_wait.load(Relaxed),
            dropped_sleeps: self.dropped_sleeps.load(Relaxed),
            held_after: self.held_len.load(Relaxed),
            left,
        })
    }
}

/// A cell's lock trace and what it says.
#[derive(Default)]
pub(crate) struct LockRecord {
    pub(crate) seen: KVec<LockSeen>,
    /// Acquisitions of further distinct locks past `MAX_LOCKS`.
    pub(crate) dropped: u32,
    /// Of those, the ones `check_wait_context()` or a sleep check rejected.
    pub(crate) dropped_invalid_wait: u32,
    pub(crate) dropped_sleeps: u32,
    /// Locks still held when the section ended, by the trace's count.
    pub(crate) held_after: u32,
    /// The entry of the first of them.
    pub(crate) left: Option<usize>,
}

impl LockRecord {
    /// The first acquisition any rule rejects.
    pub(crate) fn first_verdict(&self) -> Option<&LockSeen> {
        self.seen
            .iter()
            .find(|l| l.facts.invalid_wait || l.facts.sleeps)
    }

    /// Distinct acquisitions `check_wait_context()` rejected, the dropped
    /// ones included.
    pub(crate) fn count_invalid_wait(&self) -> usize {
        self.seen.iter().filter(|l| l.facts.invalid_wait).count()
            + self.dropped_invalid_wait as usize
    }

    pub(crate) fn count_sleeping(&self) -> usize {
        self.seen.iter().filter(|l| l.facts.sleeps).count() + self.dropped_sleeps as usize
    }
}

/// `locks=NAME@SITE:INNER:OUTER:TYPE:TRY:READ:ALLOWED:IRQCTX:PREEMPT:RCU:IRQSOFF:FLAGS:COUNT,...`
/// with FLAGS letters: `W` invalid wait context, `S` sleeps where it may
/// not, `U` lockdep does not check here, `D` lockdep disarmed; `-` none.
impl fmt::Display for LockRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seen.is_empty() {
            return f.write_str("-");
        }
        for (i, l) in self.seen.iter().enumerate() {
            let a = &l.facts;
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}@", l.name)?;
            sys::lockdep::write_symbol(f, l.ip)?;
            write!(
                f,
                ":{}:{}:{}:{}:{}:{}:{}:{:#x}:{}:{}:",
                a.inner,
                a.outer,
                a.lock_type,
                u8::from(a.trylock),
                a.read,
                a.allowed,
                a.irq_context,
                a.preempt_count,
                a.rcu_depth,
                u8::from(a.irqs_disabled)
            )?;
            let flags = [
                (a.invalid_wait, "W"),
                (a.sleeps, "S"),
                (!a.lockdep_checks, "U"),
                (!a.armed, "D"),
            ];
            if flags.iter().all(|(on, _)| !on) {
                f.write_str("-")?;
            }
            for (on, letter) in flags {
                if on {
                    f.write_str(letter)?;
                }
            }
            write!(f, ":{}", l.count)?;
        }
        Ok(())
    }
}
