//! Noticing that a file an operator edits (the gateway directory, a CRL) has changed: its
//! stamp (time, size, inode) checked on a poll, and SIGHUP for an immediate reload.

use std::path::Path;
use std::time::SystemTime;

/// What a file looked like when last checked: a change of any part triggers a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    size: u64,
    /// Catches a file replaced by rename (editors, Kubernetes ConfigMap updates) whose time and
    /// size happen to match.
    inode: u64,
}

impl FileStamp {
    /// `None` when the file cannot be read (e.g. between an unlink and a rename).
    pub fn of(path: &Path) -> Option<FileStamp> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            modified: metadata.modified().ok(),
            size: metadata.len(),
            inode,
        })
    }
}

/// SIGHUP as a stream, or `None` (logged) when the process cannot listen for it; `what` names
/// the file that then reloads only when it changes.
pub fn hangup_signals(what: &str) -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(error) => {
            tracing::warn!(%error, file = what, "cannot listen for SIGHUP, the file reloads only when it changes");
            None
        }
    }
}

/// Waits for the next SIGHUP; never returns when there is none to wait for.
pub async fn next_hangup(hangups: &mut Option<tokio::signal::unix::Signal>) {
    match hangups {
        Some(signals) => {
            if signals.recv().await.is_none() {
                // The signal stream ended; never fire again rather than spin.
                *hangups = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
