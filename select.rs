// SPDX-License-Identifier: GPL-2.0

//! Selections by name: `all ctx=raw_spin_lock alloc=kmalloc,kfree` written
//! to `run` runs every case whose spec has each term's key at one of its
//! values. The same grammar as the host's `make matrix CELLS=...`: terms
//! are held against the keys a case's spec prints (`ctx alloc gfp order
//! path n`, or `control`), so a control cell matches only `control=` terms.
//! Every name is checked against the tables, and a selection that matches
//! no case of this kernel is refused: a typo never runs nothing quietly.

use crate::spec::{for_each_case, Cell, Path};
use crate::sys;
use crate::tables::{ALLOCATORS, CONTEXTS, CONTROLS, MASKS};
use core::fmt;
use kernel::prelude::*;

/// Most terms (one a key), and values per term, one selection holds: a
/// term may name every row of the largest table.
const MAX_TERMS: usize = 7;
const MAX_VALUES: usize = 16;

/// The keys of a spec, in the order `cases` prints them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Ctx,
    Alloc,
    Gfp,
    Order,
    Path,
    N,
    Control,
}

impl Key {
    const ALL: [(Key, &'static str); 7] = [
        (Key::Ctx, "ctx"),
        (Key::Alloc, "alloc"),
        (Key::Gfp, "gfp"),
        (Key::Order, "order"),
        (Key::Path, "path"),
        (Key::N, "n"),
        (Key::Control, "control"),
    ];

    /// The index of a named value (a table row, or a number itself).
    fn value(self, name: &str) -> Option<u32> {
        match self {
            // Written as `cases` prints numbers (no leading zero), as the
            // host's selections compare them.
            Key::Order | Key::N if !name.bytes().all(|b| b.is_ascii_digit()) => None,
            Key::Order | Key::N if name.len() > 1 && name.starts_with('0') => None,
            Key::Order | Key::N => name.parse().ok(),
            Key::Path => Path::ALL
                .iter()
                .position(|p| p.name() == name)
                .map(|i| i as u32),
            Key::Ctx => CONTEXTS
                .iter()
                .position(|c| c.name == name)
                .map(|i| i as u32),
            Key::Alloc => ALLOCATORS
                .iter()
                .position(|a| a.name == name)
                .map(|i| i as u32),
            Key::Gfp => MASKS.iter().position(|m| m.name == name).map(|i| i as u32),
            Key::Control => CONTROLS
                .iter()
                .position(|c| c.name == name)
                .map(|i| i as u32),
        }
    }

    /// The value a cell's spec gives this key, if it prints the key.
    fn of(self, cell: &Cell) -> Option<u32> {
        match (self, cell) {
            (Key::Control, Cell::Control { control, .. }) => Some(*control as u32),
            (Key::Control, Cell::Alloc(_)) | (_, Cell::Control { .. }) => None,
            (Key::Ctx, Cell::Alloc(a)) => Some(a.ctx as u32),
            (Key::Alloc, Cell::Alloc(a)) => Some(a.alloc as u32),
            (Key::Gfp, Cell::Alloc(a)) => Some(a.mask as u32),
            (Key::Order, Cell::Alloc(a)) => Some(a.order),
            (Key::Path, Cell::Alloc(a)) => Path::ALL
                .iter()
                .position(|p| *p == a.path)
                .map(|i| i as u32),
            (Key::N, Cell::Alloc(a)) => Some(a.n),
        }
    }
}

/// The valid names of a key, for the message that refuses a wrong one.
struct ValidNames(Key);

impl fmt::Display for ValidNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = |names: &mut dyn Iterator<Item = &'static str>| -> fmt::Result {
            for (i, n) in names.enumerate() {
                write!(f, "{}{}", if i == 0 { "" } else { ", " }, n)?;
            }
            Ok(())
        };
        match self.0 {
            Key::Order => write!(f, "a number up to {}", sys::MAX_ORDER),
            Key::N => f.write_str("a number"),
            Key::Path => list(&mut Path::ALL.iter().map(|p| p.name())),
            Key::Ctx => list(&mut CONTEXTS.iter().map(|c| c.name)),
            Key::Alloc => list(&mut ALLOCATORS.iter().map(|a| a.name)),
            Key::Gfp => list(&mut MASKS.iter().map(|m| m.name)),
            Key::Control => list(&mut CONTROLS.iter().map(|c| c.name)),
        }
    }
}

#[derive(Clone, Copy)]
struct Term {
    key: Key,
    values: [u32; MAX_VALUES],
    len: usize,
}

/// A parsed selection; with no term it selects every case (`all`).
#[derive(Clone, Copy)]
pub(crate) struct Selection {
    terms: [Term; MAX_TERMS],
    len: usize,
}

impl Selection {
    /// Parses the terms after `all`. `bad` logs the reason and gives the
    /// error (the caller's one `pr_err` per refused write).
    pub(crate) fn parse<'a>(
        tokens: impl Iterator<Item = &'a str>,
        bad: impl Fn(fmt::Arguments<'_>) -> Error,
    ) -> Result<Self> {
        let empty = Term {
            key: Key::Ctx,
            values: [0; MAX_VALUES],
            len: 0,
        };
        let mut sel = Selection {
            terms: [empty; MAX_TERMS],
            len: 0,
        };
        for token in tokens {
            let (name, values) = token.split_once('=').ok_or_else(|| {
                bad(format_args!(
                    "'{}' after 'all' is not KEY=VALUE[,VALUE...]",
                    token
                ))
            })?;
            let key = Key::ALL
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(k, _)| *k)
                .ok_or_else(|| {
                    bad(format_args!(
                        "unknown key '{}' in '{}': the keys are ctx, alloc, gfp, order, path, n, control",
                        name, token
                    ))
                })?;
            if sel.terms[..sel.len].iter().any(|t| t.key == key) {
                return Err(bad(format_args!("key '{}' given twice", name)));
            }
            if sel.len == MAX_TERMS {
                return Err(bad(format_args!("more than {} terms", MAX_TERMS)));
            }
            let mut term = Term { key, ..empty };
            for value in values.split(',') {
                let v = key.value(value).ok_or_else(|| {
                    bad(format_args!(
                        "unknown {} '{}' in '{}': {} is one of: {}",
                        name,
                        value,
                        token,
                        name,
                        ValidNames(key)
                    ))
                })?;
                if term.len == MAX_VALUES {
                    return Err(bad(format_args!(
                        "more than {} values in '{}'",
                        MAX_VALUES, token
                    )));
                }
                term.values[term.len] = v;
                term.len += 1;
            }
            sel.terms[sel.len] = term;
            sel.len += 1;
        }
        if sel.len > 0 && sel.count()? == 0 {
            return Err(bad(format_args!(
                "the selection matches no case of this kernel (each name exists, not all together; the cases file lists them)"
            )));
        }
        Ok(sel)
    }

    /// Whether `cell` has every term's key at one of its values.
    pub(crate) fn matches(&self, cell: &Cell) -> bool {
        self.terms[..self.len].iter().all(|t| {
            t.key
                .of(cell)
                .is_some_and(|v| t.values[..t.len].contains(&v))
        })
    }

    /// How many cases of this kernel the selection matches.
    fn count(&self) -> Result<usize> {
        let mut n = 0;
        for_each_case(|cell| {
            n += usize::from(self.matches(&cell));
            Ok(())
        })?;
        Ok(n)
    }
}
