// SPDX-License-Identifier: GPL-2.0 or MIT

//! GPU page tables: io-pgtable's LPAE format, with tables budgeted exactly and reserved before
//! an update, so that the update itself allocates nothing.

pub(crate) mod budget;
pub(crate) mod pgtable;
pub(crate) mod pool;
pub(crate) mod walker;

#[cfg(CONFIG_DRM_MIRAGE_KUNIT_TEST)]
pub(crate) mod tests;
