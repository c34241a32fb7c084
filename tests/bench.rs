//! `shlyuz bench gateway` keeps working: a small run completes every scenario without a failed call.

use std::process::Command;

#[test]
fn gateway_bench_runs_every_scenario_without_failures() {
    let output = Command::new(env!("CARGO_BIN_EXE_shlyuz"))
        .args([
            "bench",
            "gateway",
            "--requests",
            "300",
            "--concurrency",
            "8",
            "--connections",
            "2",
            "--memory-streams",
            "16",
            "--skip-nginx",
            "--log-level",
            "warn",
        ])
        .env_remove("SHLYUZ_CONFIG")
        .output()
        .expect("run shlyuz bench gateway");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for scenario in ["direct", "gateway, full policy", "gateway, pure proxy"] {
        let row = stdout
            .lines()
            .find(|line| line.starts_with(scenario) && !line.contains("memory"))
            .unwrap_or_else(|| panic!("no row for {scenario} in:\n{stdout}"));
        let failed: u64 = row
            .split_whitespace()
            .last()
            .and_then(|value| value.parse().ok())
            .unwrap_or(u64::MAX);
        assert_eq!(failed, 0, "{row}");
    }
    assert!(stdout.contains("gateway resident memory"), "{stdout}");
}

/// `shlyuz bench notify` keeps working: a small run accepts and sends every notification.
#[test]
fn notify_bench_accepts_and_sends_everything() {
    let output = Command::new(env!("CARGO_BIN_EXE_shlyuz"))
        .args([
            "bench",
            "notify",
            "--notifications",
            "200",
            "--concurrency",
            "8",
            "--workers",
            "2",
            "--log-level",
            "warn",
        ])
        .env_remove("SHLYUZ_CONFIG")
        .output()
        .expect("run shlyuz bench notify");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("accepted       200 of     200"), "{stdout}");
    assert!(stdout.contains("sent           200 of     200"), "{stdout}");
}

/// `shlyuz bench housing` keeps working: a small round and a small review through the gateway
/// complete (the review's gateway loads the shipped default directory).
#[test]
fn housing_bench_runs_the_round_and_the_review() {
    let output = Command::new(env!("CARGO_BIN_EXE_shlyuz"))
        .args([
            "bench",
            "housing",
            "--persons",
            "300",
            "--dwellings",
            "30",
            "--localities",
            "3",
            "--review-persons",
            "60",
            "--log-level",
            "warn",
        ])
        .env_remove("SHLYUZ_CONFIG")
        .output()
        .expect("run shlyuz bench housing");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("sqlite"), "{stdout}");
    assert!(
        stdout.contains("review through the gateway (SQLite): 60 persons checked"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 not checked"), "{stdout}");
}
