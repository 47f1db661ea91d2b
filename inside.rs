// SPDX-License-Identifier: GPL-2.0

//! What each context looks like from inside: the runtime checks code in it
//! could call (`preemptible()`, `in_atomic()`, `irqs_disabled()`,
//! `in_task()`, ...), and what the kernel's rules say of taking each kind
//! of lock there. Recorded once, at load, by entering every context with a
//! body that only reads; `contexts` in debugfs prints it.

use crate::detector::Detector;
use crate::locktrace;
use crate::sys::lockdep::{ContextState, LOCK_NORMAL, WAIT_CONFIG, WAIT_SLEEP, WAIT_SPIN};
use crate::tables::{Locks, CONTEXTS};
use core::fmt;
use kernel::{alloc::KVec, prelude::*};

/// The lock kinds judged in every context: a name and lockdep's wait
/// types for it (`raw_spinlock_t` is `LD_WAIT_SPIN`, `spinlock_t`
/// `LD_WAIT_CONFIG`, a mutex `LD_WAIT_SLEEP`; all inner, no outer).
const LOCK_KINDS: [(&str, (u8, u8, u8)); 3] = [
    ("raw_spinlock_t", (WAIT_SPIN, 0, LOCK_NORMAL)),
    ("spinlock_t", (WAIT_CONFIG, 0, LOCK_NORMAL)),
    ("mutex", (WAIT_SLEEP, 0, LOCK_NORMAL)),
];

/// One context, seen from inside its body.
pub(crate) struct Inside {
    pub(crate) context: usize,
    state: ContextState,
    /// The wait type lockdep allows there (`curr_inner`).
    allowed: u8,
}

/// Enters every context once with a body that reads its state, observed
/// like a cell (the context's own locks are traced, so that lockdep's
/// `curr_inner` counts them). Process context, no cell running.
pub(crate) fn record(detector: &Detector, locks: &Locks) -> Result<KVec<Inside>> {
    let mut rows = KVec::with_capacity(CONTEXTS.len(), GFP_KERNEL)?;
    for (context, def) in CONTEXTS.iter().enumerate() {
        let mut seen = None;
        detector.begin(def.body_in);
        detector.trace_locks(&mut || {
            (def.enter)(locks, &mut || {
                detector.body(&mut || seen = Some(detector.locks.allowed_now()))
            })
        });
        detector.end();
        // An NMI that never came leaves no row.
        if let Some((state, allowed)) = seen {
            rows.push(
                Inside {
                    context,
                    state,
                    allowed,
                },
                GFP_KERNEL,
            )?;
        }
    }
    Ok(rows)
}

/// A verdict as a word: `legal`, the reports the rules predict, or
/// `not_checked` where lockdep checks nothing (NMI: `lockdep_off()`) and
/// no sleep check fires, which does not make a lock legal there.
fn verdict_name((invalid_wait, sleeps): (bool, bool), lockdep_checks: bool) -> &'static str {
    match (invalid_wait, sleeps) {
        (false, false) if !lockdep_checks => "not_checked",
        (false, false) => "legal",
        (true, false) => "invalid_wait_context",
        (false, true) => "sleeping_in_atomic",
        (true, true) => "invalid_wait_context+sleeping_in_atomic",
    }
}

impl fmt::Display for Inside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.state;
        write!(
            f,
            "context={} preempt_count={:#x} preemptible={} in_atomic={} irqs_disabled={} in_task={} in_hardirq={} in_serving_softirq={} in_nmi={} rcu_depth={} lockdep_checks={} lockdep_allowed={}",
            CONTEXTS[self.context].name,
            s.preempt_count,
            u8::from(s.preemptible()),
            u8::from(s.in_atomic()),
            u8::from(s.irqs_disabled),
            u8::from(s.in_task()),
            u8::from(s.in_hardirq()),
            u8::from(s.in_serving_softirq()),
            u8::from(s.in_nmi()),
            s.rcu_depth,
            u8::from(!s.lockdep_off),
            self.allowed
        )?;
        for (name, types) in LOCK_KINDS {
            let v = locktrace::verdict(types, false, s, self.allowed);
            write!(f, " {}={}", name, verdict_name(v, !s.lockdep_off))?;
        }
        writeln!(f)
    }
}
