//! `shlyuz check-upstream FILE`: the dry run of an upstream file, as an operator runs it before
//! deploying one — the real binary, the registry's own start-up checks.

use std::process::Command;

fn check(text: &str) -> (i32, String, String) {
    let directory = tempfile::tempdir().expect("dir");
    let file = directory.path().join("upstream.toml");
    std::fs::write(&file, text).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_shlyuz"))
        .arg("check-upstream")
        .arg(&file)
        .env_remove("SHLYUZ_TEST_API_KEY")
        .output()
        .expect("run shlyuz");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
base_url = "https://msek.example.gov.kz/api/v2"
timeout_ms = 2000
max_attempts = 3
initial_backoff_ms = 100

[endpoints.persons]
path = "persons/search"
records_pointer = "/data/items"
complete_pointer = "/complete"
fields = { last_name = "/name/last" }
"#;

#[test]
fn a_good_file_is_summarised_with_its_attempt_budget() {
    let (code, stdout, stderr) = check(GOOD);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("https://msek.example.gov.kz/api/v2"),
        "{stdout}"
    );
    assert!(stdout.contains("persons"), "{stdout}");
    // 2000 × 3 + (100 + 200) × 1.5
    assert!(stdout.contains("attempt budget: 6450 ms"), "{stdout}");
}

#[test]
fn a_bad_file_exits_non_zero_naming_the_key() {
    let cases = [
        (format!("{GOOD}\nretries = 4\n"), "retries"),
        (
            GOOD.replace("[endpoints.persons]", "[endpoints.pets]"),
            "endpoints.pets",
        ),
        (
            GOOD.replace(
                "timeout_ms = 2000",
                "timeout_ms = 2000\napi_key_header = \"X-API-Key\"\napi_key_file = \"/nonexistent/key\"",
            ),
            "api_key_file",
        ),
        (
            GOOD.replace(
                "timeout_ms = 2000",
                "timeout_ms = 2000\napi_key_header = \"X-API-Key\"\napi_key_env = \"SHLYUZ_TEST_API_KEY\"",
            ),
            "api_key_env",
        ),
    ];
    for (text, key) in cases {
        let (code, stdout, stderr) = check(&text);
        assert_eq!(code, 2, "{key}: {stdout}{stderr}");
        assert!(stderr.contains(key), "{key} is not named: {stderr}");
        assert!(stdout.is_empty(), "{key}: nothing is summarised: {stdout}");
    }
}
