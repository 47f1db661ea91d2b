// SPDX-License-Identifier: GPL-2.0

//! The debugfs surface, `/sys/kernel/debug/rust_gfp_nolocks/`: `run`,
//! `reset`, `settle`, `results`, `last`, `cases`, `tables`, `lockdep`,
//! `contexts`, `sleep_check_wait` and `counters/`.

use crate::detector::{REPORT_KINDS, REPORT_SYMBOLS};
use crate::runner::State;
use crate::spec::{for_each_case, parse_spec, MAX_SPEC_LEN};
use crate::sys;
use crate::tables::{ALLOCATORS, CONTEXTS, CONTROLS, MASKS};
use core::fmt;
use kernel::{
    debugfs::ScopedDir,
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
    uaccess::UserSliceReader,
};

fn write_run(state: &State, reader: &mut UserSliceReader) -> Result {
    let len = reader.len();
    if len > MAX_SPEC_LEN {
        pr_err!(
            "run: spec of {} bytes is longer than {}; nothing was run\n",
            len,
            MAX_SPEC_LEN
        );
        return Err(EINVAL);
    }
    let mut buf = [0u8; MAX_SPEC_LEN];
    reader.read_slice(&mut buf[..len])?;
    let spec = parse_spec(&buf[..len])?;
    state.run(spec)
}

/// Reads a write of `1`, the only value `reset` and `settle` take; anything
/// else is refused with a line that says what the file does.
fn read_one(reader: &mut UserSliceReader, usage: &str) -> Result {
    let mut buf = [0u8; 8];
    let len = reader.len();
    if len <= buf.len() {
        reader.read_slice(&mut buf[..len])?;
        if buf[..len].trim_ascii() == b"1" {
            return Ok(());
        }
    }
    pr_err!("{}\n", usage);
    Err(EINVAL)
}

/// `0` or `1`, for `sleep_check_wait`: anything else is refused with a
/// line that says what the file does.
fn write_sleep_check_wait(state: &State, reader: &mut UserSliceReader) -> Result {
    let mut buf = [0u8; 8];
    let len = reader.len();
    if len <= buf.len() {
        reader.read_slice(&mut buf[..len])?;
        let wait = match buf[..len].trim_ascii() {
            b"0" => Some(false),
            b"1" => Some(true),
            _ => None,
        };
        if let Some(wait) = wait {
            let _serialized = state.run_lock.lock();
            state.wait_sleep_check.store(wait, Relaxed);
            return Ok(());
        }
    }
    pr_err!("sleep_check_wait: write 1 to let each cell wait until the kernel's sleep check may print again (its report is seen), 0 not to (faster; the derived verdicts still answer)\n");
    Err(EINVAL)
}

fn show_sleep_check_wait(state: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", u8::from(state.wait_sleep_check.load(Relaxed)))
}

fn write_reset(state: &State, reader: &mut UserSliceReader) -> Result {
    read_one(reader, "reset: write 1 to clear results and counters")?;
    state.reset()
}

fn write_settle(state: &State, reader: &mut UserSliceReader) -> Result {
    read_one(
        reader,
        "settle: write 1 to wait until a cell would not wait",
    )?;
    state.settle();
    Ok(())
}

fn show_results(state: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for r in state.results.lock().iter() {
        write!(f, "{}", r)?;
    }
    Ok(())
}

/// The newest results line alone: a reader after each cell need not read
/// them all (a shell reads a file a byte at a time).
fn show_last(state: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match state.results.lock().last() {
        Some(r) => write!(f, "{}", r),
        None => Ok(()),
    }
}

fn show_cases(_: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut out = Ok(());
    let _ = for_each_case(|cell| {
        out = writeln!(f, "{}", cell);
        out.map_err(|_| EINVAL)
    });
    out
}

fn show_tables(_: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, c) in CONTEXTS.iter().enumerate() {
        writeln!(f, "context {} {}", i, c.name)?;
    }
    for (i, m) in MASKS.iter().enumerate() {
        writeln!(f, "mask {} {} {:#x} short={}", i, m.name, m.gfp, m.short)?;
    }
    for (i, a) in ALLOCATORS.iter().enumerate() {
        writeln!(
            f,
            "allocator {} {} order={} title={}",
            i, a.name, a.default_order, a.title
        )?;
    }
    for (i, c) in CONTROLS.iter().enumerate() {
        writeln!(f, "control {} {} in {}", i, c.name, c.context)?;
    }
    for (i, (name, symbol)) in REPORT_KINDS.iter().zip(REPORT_SYMBOLS).enumerate() {
        writeln!(f, "kind {} {} {}", i, name.to_str().unwrap_or("?"), symbol)?;
    }
    Ok(())
}

fn show_contexts(state: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for row in state.inside.lock().iter() {
        write!(f, "{}", row)?;
    }
    Ok(())
}

fn show_lockdep(_: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let armed = if sys::lockdep_armed() {
        "armed"
    } else {
        "disarmed"
    };
    writeln!(f, "{}", armed)
}

fn show_counter(c: &Atomic<u64>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", c.load(Relaxed))
}

pub(crate) fn populate<'a>(state: &'a State, dir: &ScopedDir<'a, '_>) {
    dir.write_only_callback_file(c"run", state, &write_run);
    dir.write_only_callback_file(c"reset", state, &write_reset);
    dir.write_only_callback_file(c"settle", state, &write_settle);
    dir.read_callback_file(c"results", state, &show_results);
    dir.read_callback_file(c"last", state, &show_last);
    dir.read_callback_file(c"cases", state, &show_cases);
    dir.read_callback_file(c"tables", state, &show_tables);
    dir.read_callback_file(c"lockdep", state, &show_lockdep);
    dir.read_callback_file(c"contexts", state, &show_contexts);
    dir.read_write_callback_file(
        c"sleep_check_wait",
        state,
        &show_sleep_check_wait,
        &write_sleep_check_wait,
    );
    let counters = dir.dir(c"counters");
    let c = &state.counters;
    for (name, counter) in REPORT_KINDS.into_iter().zip(&c.reports) {
        counters.read_callback_file(name, counter, &show_counter);
    }
    counters.read_callback_file(c"allocs_ok", &c.allocs_ok, &show_counter);
    counters.read_callback_file(c"allocs_failed", &c.allocs_failed, &show_counter);
    counters.read_callback_file(c"cells_run", &c.cells_run, &show_counter);
    counters.read_callback_file(c"cells_refused", &c.cells_refused, &show_counter);
    counters.read_callback_file(c"unattributed", &state.detector.unattributed, &show_counter);
}
