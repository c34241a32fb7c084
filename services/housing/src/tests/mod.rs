//! The crate's tests: they reach its private modules.

mod allocation;
mod review;
