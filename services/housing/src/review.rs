//! Proactive review (seed 002).
