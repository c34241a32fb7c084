//! What every Shlyuz service shares: server bootstrap, configuration, telemetry, storage, the error
//! model, the IIN type, the working-day calendar, the clock, the development PKI, and the retry
//! backoff and circuit breaker every upstream call uses.

pub mod application_form;
pub mod backoff;
pub mod breaker;
pub mod calendar;
pub mod client;
pub mod clock;
pub mod config;
pub mod db;
pub mod envelope;
pub mod error;
pub mod file_watch;
pub mod fixture_people;
pub mod gateway_client;
pub mod identity;
pub mod iin;
pub mod listener;
pub mod outbox;
pub mod paging;
pub mod pki;
pub mod purpose;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod signed_document;
pub mod subject;
pub mod task;
pub mod telemetry;
pub mod test_clock;

/// Installs rustls's `ring` crypto provider as the process default. Call once at start-up, before
/// any TLS is used: with two providers compiled in, rustls cannot pick one and panics.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
