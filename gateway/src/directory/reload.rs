//! Hot reload: the directory lives behind an [`ArcSwap`], so a reload is one pointer swap. Calls in
//! flight keep the `Arc` they loaded and finish under the directory they started with; an invalid
//! new file is refused and the old directory stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use shlyuz_kit::file_watch::{FileStamp, hangup_signals, next_hangup};
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_kit::telemetry::MetricsRegistry;

use super::DirectoryError;
use super::model::{Directory, TargetResolver};

/// The current directory, shared by the sync channel, the Directory API and the reloader.
#[derive(Clone)]
pub struct DirectoryHandle {
    current: Arc<ArcSwap<Directory>>,
}

impl DirectoryHandle {
    /// A handle serving `directory` until the next reload.
    pub fn new(directory: Directory) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(directory)),
        }
    }

    /// The current directory, cheaply (no reference-count traffic); for one call's checks.
    pub fn current(&self) -> arc_swap::Guard<Arc<Directory>> {
        self.current.load()
    }

    /// The current directory as an owned `Arc`, for holding across long waits.
    pub fn snapshot(&self) -> Arc<Directory> {
        self.current.load_full()
    }

    /// Replaces the directory; calls in flight keep the one they loaded.
    pub fn replace(&self, directory: Directory) {
        self.current.store(Arc::new(directory));
    }

    /// Reloads from the file and with the resolver the current directory was loaded with.
    pub fn reload_from_file(&self) -> Result<(), DirectoryError> {
        let current = self.current.load();
        let Some(source_file) = current.source_file().map(Path::to_path_buf) else {
            return Err(DirectoryError::NoSourceFile);
        };
        let targets = current.targets().clone();
        // Loading takes a while; the guard should not pin the old directory meanwhile.
        drop(current);
        self.reload_from(&source_file, &targets)
    }

    /// Loads `path`; on success it becomes the current directory, on failure the old one stays.
    pub fn reload_from(&self, path: &Path, targets: &TargetResolver) -> Result<(), DirectoryError> {
        let directory = Directory::load(path, targets)?;
        self.replace(directory);
        Ok(())
    }
}

impl fmt::Debug for DirectoryHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_tuple("DirectoryHandle")
            .field(&*self.current.load())
            .finish()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

const RELOAD_OK: ReloadLabels = ReloadLabels { result: "ok" };
const RELOAD_REJECTED: ReloadLabels = ReloadLabels { result: "rejected" };

/// Reloads the directory from `path` on SIGHUP and whenever the file's modification time, size
/// or inode changes (checked every `poll_interval`), until `shutdown`. Results are counted in
/// `shlyuz_gateway_directory_reloads_total{result="ok"|"rejected"}`.
pub fn spawn_reloader(
    handle: DirectoryHandle,
    path: PathBuf,
    targets: TargetResolver,
    shutdown: ShutdownSignal,
    metrics: &MetricsRegistry,
    poll_interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let reloads = Family::<ReloadLabels, Counter>::default();
    // Both series exist from the start, so an alert on "rejected" sees a zero before the first one.
    let _ = reloads.get_or_create(&RELOAD_OK);
    let _ = reloads.get_or_create(&RELOAD_REJECTED);
    metrics.register(
        "gateway_directory_reloads",
        "directory reloads by result: ok (applied) or rejected (invalid file, previous directory kept)",
        reloads.clone(),
    );
    let mut hangups = hangup_signals("directory");
    let mut last_stamp = FileStamp::of(&path);
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(poll_interval.max(Duration::from_millis(1)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; the directory was just loaded.
        poll.tick().await;
        let stopped = shutdown.wait();
        tokio::pin!(stopped);
        loop {
            let trigger = tokio::select! {
                () = &mut stopped => return,
                () = next_hangup(&mut hangups) => "sighup",
                _ = poll.tick() => {
                    let stamp = FileStamp::of(&path);
                    if stamp == last_stamp {
                        continue;
                    }
                    "file changed"
                }
            };
            last_stamp = FileStamp::of(&path);
            reload_once(&handle, &path, &targets, &reloads, trigger).await;
        }
    })
}

async fn reload_once(
    handle: &DirectoryHandle,
    path: &Path,
    targets: &TargetResolver,
    reloads: &Family<ReloadLabels, Counter>,
    trigger: &'static str,
) {
    let loading_handle = handle.clone();
    let loading_path = path.to_path_buf();
    let loading_targets = targets.clone();
    // Reading key files is blocking file I/O.
    let outcome = tokio::task::spawn_blocking(move || {
        loading_handle.reload_from(&loading_path, &loading_targets)
    })
    .await;
    let result = match outcome {
        Ok(result) => result,
        Err(join_error) => {
            tracing::error!(file = %path.display(), error = %join_error, "directory reload task failed");
            reloads.get_or_create(&RELOAD_REJECTED).inc();
            return;
        }
    };
    match result {
        Ok(()) => {
            reloads.get_or_create(&RELOAD_OK).inc();
            let directory = handle.current();
            tracing::info!(
                file = %path.display(),
                trigger,
                participants = directory.participants().count(),
                routes = directory.routes().count(),
                "directory reloaded"
            );
        }
        Err(error) => {
            reloads.get_or_create(&RELOAD_REJECTED).inc();
            let problems = error.problems();
            tracing::error!(
                file = %path.display(),
                trigger,
                problem_count = problems.len(),
                problems = %problems.join("; "),
                "directory reload rejected, keeping the previous directory"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use shlyuz_kit::shutdown::shutdown_channel;

    use super::super::test_fixture::{Fixture, VALID_DIRECTORY, edited};
    use super::*;

    const WAIT_LIMIT: Duration = Duration::from_secs(10);

    /// Every reloader of the process hears a SIGHUP, so the tests that count reloads run one at a
    /// time.
    static RELOADER_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Polls `condition` until it holds, failing the test after [`WAIT_LIMIT`].
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(
                started.elapsed() < WAIT_LIMIT,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn reload_count(metrics: &MetricsRegistry, result: &str) -> u64 {
        let prefix = format!("shlyuz_gateway_directory_reloads_total{{result=\"{result}\"}} ");
        metrics
            .encode()
            .lines()
            .find_map(|line| {
                line.strip_prefix(&prefix)
                    .map(|count| count.trim().parse().unwrap())
            })
            .unwrap_or(0)
    }

    fn with_portal(text: &str) -> String {
        format!(
            "{text}\n[[participants]]\nid = \"jauynger-portal\"\nname = \"Jauynger.gov.kz portal\"\nsigning_public_key = \"pki/jauynger-portal/signing.pub\"\n"
        )
    }

    #[tokio::test]
    async fn file_changes_are_applied_and_invalid_files_refused() {
        let _serialized = RELOADER_TESTS.lock().await;
        let fixture = Fixture::new();
        let path = fixture.write_directory(VALID_DIRECTORY);
        let handle = DirectoryHandle::new(Directory::load(&path, &Fixture::targets()).unwrap());
        let metrics = MetricsRegistry::default();
        let (trigger, shutdown) = shutdown_channel();
        let reloader = spawn_reloader(
            handle.clone(),
            path.clone(),
            Fixture::targets(),
            shutdown,
            &metrics,
            Duration::from_millis(20),
        );
        assert_eq!(reload_count(&metrics, "ok"), 0);
        assert_eq!(reload_count(&metrics, "rejected"), 0);
        let in_flight = handle.snapshot();

        // A valid change is applied.
        fixture.write_directory(&with_portal(VALID_DIRECTORY));
        eventually("the portal to appear", || {
            handle.current().participant("jauynger-portal").is_some()
        })
        .await;
        // The counter moves just after the swap.
        eventually("the reload to be counted", || {
            reload_count(&metrics, "ok") == 1
        })
        .await;
        // A call that loaded the directory before the reload still holds the old one.
        assert!(in_flight.participant("jauynger-portal").is_none());

        // An invalid file is refused and the previous directory stays.
        let invalid = edited(&with_portal(VALID_DIRECTORY), "burst = 100", "burst = 0");
        fixture.write_directory(&invalid);
        eventually("the rejection to be counted", || {
            reload_count(&metrics, "rejected") == 1
        })
        .await;
        let current = handle.current();
        assert!(current.participant("jauynger-portal").is_some());
        assert_eq!(
            current
                .participant("intake")
                .unwrap()
                .quota
                .map(|quota| quota.burst),
            Some(100)
        );
        drop(current);

        // The fixed file is applied.
        let fixed = edited(&with_portal(VALID_DIRECTORY), "burst = 100", "burst = 7");
        fixture.write_directory(&fixed);
        eventually("the fixed file to be applied", || {
            handle
                .current()
                .participant("intake")
                .unwrap()
                .quota
                .map(|quota| quota.burst)
                == Some(7)
        })
        .await;
        eventually("the second reload to be counted", || {
            reload_count(&metrics, "ok") == 2
        })
        .await;
        assert_eq!(reload_count(&metrics, "rejected"), 1);

        trigger.trigger();
        tokio::time::timeout(WAIT_LIMIT, reloader)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn sighup_reloads_without_waiting_for_the_poll() {
        let _serialized = RELOADER_TESTS.lock().await;
        let fixture = Fixture::new();
        let path = fixture.write_directory(VALID_DIRECTORY);
        let handle = DirectoryHandle::new(Directory::load(&path, &Fixture::targets()).unwrap());
        let metrics = MetricsRegistry::default();
        let (trigger, shutdown) = shutdown_channel();
        // The SIGHUP handler is installed before this returns, so the signal below cannot kill
        // the test process.
        let reloader = spawn_reloader(
            handle.clone(),
            path.clone(),
            Fixture::targets(),
            shutdown,
            &metrics,
            Duration::from_secs(3600),
        );

        fixture.write_directory(&with_portal(VALID_DIRECTORY));
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(std::process::id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        eventually("the portal to appear", || {
            handle.current().participant("jauynger-portal").is_some()
        })
        .await;

        trigger.trigger();
        tokio::time::timeout(WAIT_LIMIT, reloader)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn reload_from_file_uses_the_loaded_file_and_keeps_the_old_directory_on_error() {
        let fixture = Fixture::new();
        let path = fixture.write_directory(VALID_DIRECTORY);
        let handle = DirectoryHandle::new(Directory::load(&path, &Fixture::targets()).unwrap());

        fixture.write_directory(&with_portal(VALID_DIRECTORY));
        handle.reload_from_file().unwrap();
        assert!(handle.current().participant("jauynger-portal").is_some());

        fixture.write_directory("[[participants]]\nid = \"x\"\n");
        let error = handle.reload_from_file().unwrap_err();
        assert!(matches!(error, DirectoryError::Invalid { .. }), "{error:?}");
        assert!(handle.current().participant("jauynger-portal").is_some());

        let from_text = DirectoryHandle::new(fixture.compile(VALID_DIRECTORY).unwrap());
        assert!(matches!(
            from_text.reload_from_file(),
            Err(DirectoryError::NoSourceFile)
        ));
    }
}
