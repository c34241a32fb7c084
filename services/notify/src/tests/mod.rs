//! The crate's tests: they reach its private modules.

mod common;
mod delivery;
mod grpc;
mod http_provider;
mod inbound;
mod otp;
