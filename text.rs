// SPDX-License-Identifier: GPL-2.0

//! Names the kernel hands the module in any context (a lock class, a
//! function), kept in atomics by the probes and copied out afterwards.

use kernel::sync::atomic::{Atomic, Relaxed};

/// Longest lock class or site name kept; longer ones are cut.
pub(crate) const NAME_LEN: usize = 63;

/// A name printed by the kernel (a lock class, a function), kept in
/// atomics because the probe that writes it runs in any context. One
/// writer at a time: the running cell's own printk calls, in order.
pub(crate) struct TextSlot {
    words: [Atomic<u64>; 8],
    len: Atomic<u32>,
}

impl TextSlot {
    pub(crate) const fn new() -> Self {
        Self {
            words: [const { Atomic::new(0) }; 8],
            len: Atomic::new(0),
        }
    }

    pub(crate) fn clear(&self) {
        for w in &self.words {
            w.store(0, Relaxed);
        }
        self.len.store(0, Relaxed);
    }

    pub(crate) fn push(&self, bytes: &[u8]) {
        for &b in bytes {
            let i = self.len.load(Relaxed) as usize;
            if i >= NAME_LEN {
                return;
            }
            // Spaces and '=' would break the results line's key=value;
            // ',', '@' and ':' its list of locks.
            let b = if matches!(b, b' ' | b'=' | b',' | b'@' | b':') {
                b'_'
            } else {
                b
            };
            let word = &self.words[i / 8];
            word.store(
                word.load(Relaxed) | (u64::from(b) << (8 * (i % 8))),
                Relaxed,
            );
            self.len.store(i as u32 + 1, Relaxed);
        }
    }

    pub(crate) fn get(&self) -> Name {
        let mut name = Name::default();
        let len = (self.len.load(Relaxed) as usize).min(NAME_LEN);
        for (i, b) in name.bytes.iter_mut().take(len).enumerate() {
            *b = (self.words[i / 8].load(Relaxed) >> (8 * (i % 8))) as u8;
        }
        name.len = len as u8;
        name
    }
}

/// A copy of a [`TextSlot`]; `-` when empty.
#[derive(Clone, Copy)]
pub(crate) struct Name {
    bytes: [u8; NAME_LEN],
    len: u8,
}

impl Name {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl Default for Name {
    fn default() -> Self {
        Self {
            bytes: [0; NAME_LEN],
            len: 0,
        }
    }
}

impl core::fmt::Display for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match core::str::from_utf8(&self.bytes[..self.len as usize]) {
            Ok(s) if !s.is_empty() => f.write_str(s),
            _ => f.write_str("-"),
        }
    }
}
