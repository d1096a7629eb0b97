// SPDX-License-Identifier: GPL-2.0 or MIT

//! The exact page-table budget of an update.
//!
//! [`Budget`] is a [`PtOps`] that changes nothing: it reads the real page table and records
//! what the update would change in an overlay, and counts the tables io-pgtable would create.
//! The walker runs the update's ops over it first, then over the real page table, so both see
//! the same calls. The count is what the pool must hold; [`PtPool::reserve`] takes it.
//!
//! io-pgtable's rules, which the overlay mirrors (`drivers/iommu/io-pgtable-arm.c`):
//! - mapping a leaf creates every missing table above it;
//! - a leaf mapped over a table entry frees that table and everything below it;
//! - unmapping a table entry at its level frees the table and everything below it;
//! - unmapping pages never frees the table that held them.
//!
//! Level-3 entries create and free no table, so the overlay keeps only levels 0 to 2.
//!
//! [`PtPool::reserve`]: super::pool::PtPool::reserve

use kernel::{
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
};

use super::{
    pgtable::PtRead,
    walker::{level_shift, size_level, Entry, PtOps},
};

/// Entries of levels 0 to 2 that dry runs changed, by `(level, va >> level_shift(level))`:
/// the page table as the updates run over it so far will leave it, where it differs.
///
/// A VM keeps one across its queued binds: each bind's dry run starts where the binds
/// submitted before it end, however far the real page table is behind. A table a dry run
/// created holds only what the overlay says.
pub(crate) struct Overlay(RBTree<(usize, u64), Entry>);

impl Overlay {
    pub(crate) fn new() -> Self {
        Self(RBTree::new())
    }

    /// Forgets every change: for when the page table has caught up with every update.
    pub(crate) fn clear(&mut self) {
        self.0 = RBTree::new();
    }
}

type Node = RBTreeNode<(usize, u64), Entry>;

/// How to undo one change of the overlay, without allocating.
enum Undo {
    /// The key was inserted, over what the node held.
    Inserted((usize, u64), Option<Node>),
    /// The node was removed.
    Removed(Node),
}

/// A dry run of page-table updates over a page table and an [`Overlay`].
///
/// It reads the page table through `pt` one walk at a time and allocates between walks: a
/// caller that reads under the page-table lock never holds it while allocating. The caller
/// keeps the entries of levels 0 to 2 that the overlay does not hide from changing meanwhile
/// (updates change only entries their own dry runs put in the overlay). Pages (level 3) may
/// change under a dry run: whether one is there decides no table.
///
/// Dropping a dry run undoes its changes to the overlay; [`Budget::commit`] keeps them.
pub(crate) struct Budget<'a, R: PtRead> {
    pt: &'a R,
    overlay: &'a mut Overlay,
    journal: KVec<Undo>,
    created: usize,
}

impl<'a, R: PtRead> Budget<'a, R> {
    pub(crate) fn new(pt: &'a R, overlay: &'a mut Overlay) -> Self {
        Self {
            pt,
            overlay,
            journal: KVec::new(),
            created: 0,
        }
    }

    /// Tables the updates run so far would create.
    pub(crate) fn tables(&self) -> usize {
        self.created
    }

    /// Keeps the dry run's changes in the overlay; returns the tables it would create.
    pub(crate) fn commit(mut self) -> usize {
        self.journal.clear();
        self.created
    }

    /// Records that the entry at `level` for `va` becomes `entry`. Whatever the overlay held
    /// below it is gone: a new entry starts with nothing below.
    fn set(&mut self, level: usize, va: u64, entry: Entry) -> Result {
        if level >= 3 {
            return Ok(());
        }
        let tree = &mut self.overlay.0;
        let idx = va >> level_shift(level);
        for below in level + 1..3 {
            let bits = 9 * (below - level) as u32;
            let (lo, hi) = (idx << bits, (idx + 1) << bits);
            loop {
                let key = match tree.cursor_lower_bound(&(below, lo)) {
                    Some(c) if *c.current().0 < (below, hi) => *c.current().0,
                    _ => break,
                };
                self.journal.reserve(1, GFP_KERNEL)?;
                if let Some(node) = tree.remove_node(&key) {
                    // Cannot fail: room was made above.
                    let _ = self.journal.push_within_capacity(Undo::Removed(node));
                }
            }
        }
        self.journal.reserve(1, GFP_KERNEL)?;
        let old = tree.try_create_and_insert((level, idx), entry, GFP_KERNEL)?;
        let _ = self
            .journal
            .push_within_capacity(Undo::Inserted((level, idx), old));
        Ok(())
    }
}

impl<R: PtRead> Drop for Budget<'_, R> {
    fn drop(&mut self) {
        let tree = &mut self.overlay.0;
        while let Some(undo) = self.journal.pop() {
            match undo {
                Undo::Inserted(key, old) => {
                    tree.remove(&key);
                    if let Some(node) = old {
                        tree.insert(node);
                    }
                }
                Undo::Removed(node) => {
                    tree.insert(node);
                }
            }
        }
    }
}

impl<R: PtRead> PtOps for Budget<'_, R> {
    fn entries(&self, va: u64) -> [Entry; 4] {
        let mut real = None;
        let mut entries = [Entry::Empty; 4];
        for (level, e) in entries.iter_mut().enumerate() {
            *e = self.entry_in(level, va, &mut real);
            if *e != Entry::Table {
                break;
            }
        }
        entries
    }

    unsafe fn map(&mut self, va: u64, _pa: u64, size: u64, count: u64, _prot: u32) -> Result {
        let level = size_level(size);
        for l in 0..level {
            match self.entry(l, va) {
                Entry::Table => {}
                Entry::Empty => {
                    self.set(l, va, Entry::Table)?;
                    self.created += 1;
                }
                // io-pgtable refuses a leaf below a leaf.
                Entry::Leaf { .. } => return Err(EEXIST),
            }
        }
        if level < 3 {
            for i in 0..count {
                let v = va + i * size;
                if let Entry::Leaf { .. } = self.entry(level, v) {
                    return Err(EEXIST);
                }
                // Over a table, the table goes: the overlay entry hides what was below.
                self.set(level, v, Entry::Leaf { pa: 0, prot: 0 })?;
            }
        }
        Ok(())
    }

    fn unmap(&mut self, va: u64, size: u64) -> Result {
        let level = size_level(size);
        // Pages create and free no table, and the overlay does not track them: the real page
        // table may lose one between the walker's read and this call, when a queued bind
        // executes meanwhile. Nothing to check or record.
        if level == 3 {
            return Ok(());
        }
        if self.entry(level, va) == Entry::Empty {
            return Err(EINVAL);
        }
        self.set(level, va, Entry::Empty)
    }
}

impl<R: PtRead> Budget<'_, R> {
    /// The entry at `level` on the way to `va`; `real` caches the real page table's walk for
    /// `va`, so that the levels of one address cost one walk.
    fn entry_in(&self, level: usize, va: u64, real: &mut Option<[u64; 4]>) -> Entry {
        for l in 0..=level {
            let here = if l < 3 {
                self.overlay.0.get(&(l, va >> level_shift(l))).copied()
            } else {
                None
            };
            let e = match here {
                // Below a table the dry run created, only the overlay has entries.
                Some(Entry::Table) if l < level => return self.fresh_entry(l + 1, level, va),
                Some(e) => e,
                None => {
                    let ptes = *real.get_or_insert_with(|| self.pt.walk(va));
                    super::pgtable::decode(ptes[l], l)
                }
            };
            if l == level {
                return e;
            }
            if e != Entry::Table {
                // The walker asks only below tables; nothing is mapped below a leaf's entry.
                return Entry::Empty;
            }
        }
        Entry::Empty
    }

    /// The entry at `level` on the way to `va`.
    fn entry(&self, level: usize, va: u64) -> Entry {
        self.entry_in(level, va, &mut None)
    }

    /// The entry at `level` below a table the dry run created at `from - 1`.
    fn fresh_entry(&self, from: usize, level: usize, va: u64) -> Entry {
        for l in from..=level.min(2) {
            match self.overlay.0.get(&(l, va >> level_shift(l))).copied() {
                Some(e) if l == level => return e,
                Some(Entry::Table) => {}
                _ => return Entry::Empty,
            }
        }
        Entry::Empty
    }
}
