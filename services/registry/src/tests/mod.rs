//! The crate's tests: they reach its private modules.

mod certificate_authority;
mod conformance;
mod consent;
mod fake_notify;
mod services;
mod storage;
mod upstream;
