//! The crate's tests: they reach its private modules.

mod service;
