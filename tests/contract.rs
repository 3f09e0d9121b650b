//! The user-facing contract stays true to the code: every setting `mt-stream serve --help`
//! shows (flag and environment variable) is documented in docs/configuration.md and can be set
//! through the chart (its variable is named in values.schema.json). The metric list and the
//! close codes are held to the code by unit tests next to them (`mt_hub::metrics`,
//! `mt_hub::close`).

use std::path::Path;
use std::process::Command;

fn repository_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{}: {error}", full.display()))
}

/// (flag, environment variable) of every setting `serve --help` shows.
fn serve_settings() -> Vec<(String, String)> {
    let output = Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .args(["serve", "--help"])
        .output()
        .expect("the mt-stream binary runs");
    assert!(output.status.success(), "serve --help exits 0");
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    // clap prints each option as `--flag <VALUE>`, its help, then `[env: NAME=…]` or `[env: NAME]`.
    let mut settings = Vec::new();
    let mut flag: Option<String> = None;
    for line in help.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("--") {
            flag = Some(format!("--{}", rest.split([' ', '=']).next().unwrap_or_default()));
        }
        if let Some(at) = line.find("[env: ") {
            let name: String = line[at + 6..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            settings.push((flag.clone().expect("an [env: ] line follows its flag"), name));
        }
    }
    settings
}

/// The parser of this test finds what clap prints (else the other tests would pass vacuously).
#[test]
fn help_lists_the_settings() {
    let settings = serve_settings();
    assert!(settings.len() >= 14, "{settings:?}");
    assert!(settings.contains(&("--heartbeat-interval-ms".to_owned(), "MT_HEARTBEAT_INTERVAL_MS".to_owned())));
    assert!(settings.contains(&("--redis-url".to_owned(), "REDIS_URL".to_owned())));
}

/// Every setting of `serve` has its flag and its variable in docs/configuration.md.
#[test]
fn every_setting_is_documented() {
    let docs = repository_file("docs/configuration.md");
    let missing: Vec<String> = serve_settings()
        .into_iter()
        .filter(|(flag, env)| !docs.contains(&format!("`{flag}`")) || !docs.contains(&format!("`{env}`")))
        .map(|(flag, env)| format!("{flag} / {env}"))
        .collect();
    assert!(missing.is_empty(), "not in docs/configuration.md: {missing:?}");
}

/// Every setting of `serve` can be set from the chart: its variable is named (in backticks) in
/// the description of a value in the chart's schema.
#[test]
fn every_setting_is_in_the_chart_schema() {
    let schema = repository_file("chart/monkeytown/values.schema.json");
    let missing: Vec<String> =
        serve_settings().into_iter().map(|(_, env)| env).filter(|env| !schema.contains(&format!("`{env}`"))).collect();
    assert!(missing.is_empty(), "not named in chart/monkeytown/values.schema.json: {missing:?}");
}
