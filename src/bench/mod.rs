//! `shlyuz bench …`: throughput and latency figures, printed, never asserted in tests.

pub mod registry;
