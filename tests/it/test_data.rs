//! Test data never holds a fixed date for a job's times: the server ends jobs GitHub itself would
//! have cancelled, so a job "created" on a fixed day silently stops counting some days later and
//! the suite breaks on a day nobody changed anything. Job times are relative to now, or come from
//! an injected clock.

use std::path::Path;

/// The JSON keys whose values are a job's or run's times.
const TIME_KEYS: [&str; 4] = ["\"created_at\"", "\"started_at\"", "\"completed_at\"", "\"updated_at\""];

/// Whether `text` starts with a quoted `YYYY-MM-DD` literal.
fn starts_with_quoted_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    let shape = b"\"dddd-dd-dd";
    bytes.len() >= shape.len()
        && shape.iter().zip(bytes).all(|(want, got)| match want {
            b'd' => got.is_ascii_digit(),
            other => other == got,
        })
}

/// Each `"…_at": "YYYY-MM-DD…"` in `source`, as (line number, line).
fn fixed_job_times(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        for key in TIME_KEYS {
            let mut rest = line;
            while let Some(at) = rest.find(key) {
                rest = &rest[at + key.len()..];
                let value = rest.trim_start().strip_prefix(':').map(str::trim_start);
                if value.is_some_and(starts_with_quoted_date) {
                    found.push((number + 1, line.trim().to_owned()));
                }
            }
        }
    }
    found
}

#[test]
fn the_check_finds_a_fixed_job_time_and_passes_a_relative_one() {
    // Built from parts, so this file holds no fixed job time of its own for other checks to find.
    let year = 2026;
    let fixed = format!(r#"json!({{"id": 1, "created_at": "{year}-11-28T00:00:00Z", "labels": []}})"#);
    assert_eq!(fixed_job_times(&fixed).len(), 1);
    assert_eq!(fixed_job_times(&format!(r#"{{"started_at" : "{year}-11-28T00:00:05Z"}}"#)).len(), 1);
    assert!(fixed_job_times(r#"json!({"created_at": seconds_ago(60), "started_at": null})"#).is_empty());
    assert!(fixed_job_times(r#"assert_eq!(run["created_at"], clock.rfc3339());"#).is_empty());
}

#[test]
fn no_test_writes_a_job_with_a_fixed_date() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let sources = crate::common::rust_sources(&tests);
    assert!(sources.len() > 10, "found only {} test sources under {}", sources.len(), tests.display());
    let this_file = Path::new(file!()).file_name();
    let offenders: Vec<String> = sources
        .iter()
        .filter(|path| path.file_name() != this_file)
        .flat_map(|path| {
            let source = std::fs::read_to_string(path).unwrap();
            fixed_job_times(&source).into_iter().map(move |(line, text)| format!("{}:{line}: {text}", path.display()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "job times in test data must be relative to now (see tests/common::seconds_ago):\n{}",
        offenders.join("\n")
    );
}
