//! The gateway's directory: participants, purposes, routed services and access rules, read from a
//! TOML file (a ConfigMap in Kubernetes), validated with every problem named, compiled into O(1)
//! lookups for the sync channel, hot-reloaded on SIGHUP or when the file changes, and published
//! through the `shlyuz.gateway.v1.DirectoryService` metadata API.
//!
//! The file format is documented for operators in `docs/gateway-directory.md`.

mod file;
mod load;
mod model;
mod reload;
mod service;

#[cfg(test)]
mod test_fixture;
#[cfg(test)]
mod tests;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

pub(crate) use load::{check_service_name, is_identifier};
pub use model::{
    AccessRule, AllowedMethod, BreakerSettings, Directory, LOCAL_UPSTREAM, Participant, Purpose,
    Quota, RetrySettings, Route, Settings, TARGET_NAMES, TargetResolver, WILDCARD_METHOD,
};
pub use reload::{DirectoryHandle, spawn_reloader};
pub use service::{DirectoryApi, directory_server};

/// The directory `shlyuz up` starts with: the gateway's own services and who may call them.
pub const DEFAULT_DIRECTORY: &str = include_str!("../../config/default-directory.toml");

/// File name of the directory inside the data directory.
pub const DEFAULT_DIRECTORY_FILE_NAME: &str = "gateway-directory.toml";

/// Why a directory file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The file could not be read.
    #[error("cannot read directory file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not TOML, has a value of the wrong type, or an unknown key.
    #[error("directory file is not valid: {message}")]
    Syntax {
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// The file parses but its contents are inconsistent; every problem is listed.
    #[error("directory has {} problem(s): {}", problems.len(), problems.join("; "))]
    Invalid {
        /// One line per problem, each starting with the entry and key, e.g. `rules[3].purposes: …`.
        problems: Vec<String>,
    },
    /// A reload was asked of a directory that was not loaded from a file.
    #[error("the directory was not loaded from a file, so it cannot be reloaded")]
    NoSourceFile,
}

impl DirectoryError {
    /// Every problem as one line each (a single line for read and syntax errors).
    pub fn problems(&self) -> Vec<String> {
        match self {
            DirectoryError::Invalid { problems } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// Writes [`DEFAULT_DIRECTORY`] to `<data_dir>/gateway-directory.toml` unless a file is already
/// there, and returns the path. The write is atomic (a complete file or none) and never replaces
/// an existing file, so operator edits survive restarts.
pub fn write_default_if_missing(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let target_path = data_dir.join(DEFAULT_DIRECTORY_FILE_NAME);
    if target_path
        .try_exists()
        .with_context(|| format!("cannot check {}", target_path.display()))?
    {
        return Ok(target_path);
    }
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    // The random suffix keeps two starting gateways from sharing a temporary file.
    let temp_path = data_dir.join(format!(
        ".{DEFAULT_DIRECTORY_FILE_NAME}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let written = write_synced(&temp_path, DEFAULT_DIRECTORY.as_bytes()).and_then(|()| {
        // A hard link, unlike a rename, fails when the target exists: a file another process
        // created in the meantime is kept.
        match fs::hard_link(&temp_path, &target_path) {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    });
    // Best effort: the temporary file is garbage whether or not the link succeeded.
    let _ = fs::remove_file(&temp_path);
    written.with_context(|| format!("cannot write {}", target_path.display()))?;
    Ok(target_path)
}

fn write_synced(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(contents)?;
    // Without this the link could reach the disk before the data and leave an empty file after a
    // power loss.
    file.sync_all()
}
