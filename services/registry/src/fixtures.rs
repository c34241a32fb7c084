//! Fixture files: small hand-picked populations in TOML (the [`Population`] layout), for tests
//! and demos that need a person who exercises one rule.

use std::path::Path;

use anyhow::Context;

use crate::embedded::EmbeddedRegistry;
use crate::records::Population;

/// The fixture shipped with the crate: one person per housing-review and recruitment rule.
pub const RULES_FIXTURE: &str = include_str!("../fixtures/rules.toml");

/// Parses a fixture text.
pub fn parse(text: &str) -> anyhow::Result<Population> {
    toml::from_str(text).context("fixture is not a valid population file")
}

/// Reads a fixture file.
pub fn read(path: &Path) -> anyhow::Result<Population> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read fixture {}", path.display()))?;
    parse(&text).with_context(|| format!("fixture {}", path.display()))
}

/// Adds a fixture's records to the registry, all or nothing.
pub async fn load(registry: &EmbeddedRegistry, population: &Population) -> anyhow::Result<()> {
    registry
        .insert_population(population)
        .await
        .context("cannot insert fixture records")
}
