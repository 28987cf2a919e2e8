//! Parsers for flag values that clap does not know: durations, `KEY=VALUE`
//! pairs, JSON documents and RFC 3339 times.
//!
//! Each returns a message for a person on bad input; clap turns it into a
//! usage error (exit code 2) that names the flag.

use serde_json::value::RawValue;
use std::time::Duration;

/// A duration: "5s", "2 minutes", "1h 30m", or a bare number of milliseconds.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    quern_core::time::parse_duration_ms(s)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is not a duration (try 5s, 2 minutes, 1h 30m, or milliseconds)"))
}

/// A `KEY=VALUE` pair, split at the first `=`; the key must not be empty, the
/// value may be.
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// A dependency on a task submitted earlier: `ID`, or `ID:CONDITION` where
/// the condition is `success` (the default), `failure`, `completion` or a CEL
/// expression over the parent's `status`, `result` and `error`.
pub(crate) fn dependency(s: &str) -> Result<quern_core::Dependency, String> {
    let (id, on) = s.split_once(':').unwrap_or((s, "success"));
    let task = quern_client::Uuid::try_parse(id).map_err(|_| format!("`{id}` is not a task id"))?;
    let on = match on {
        "success" => quern_core::Condition::Outcome(quern_core::OutcomeCondition::Success),
        "failure" => quern_core::Condition::Outcome(quern_core::OutcomeCondition::Failure),
        "completion" => quern_core::Condition::Outcome(quern_core::OutcomeCondition::Completion),
        expr => quern_core::Condition::Expr { expr: expr.to_owned() },
    };
    Ok(quern_core::Dependency { task, on })
}

/// A JSON document, kept as the text given (key order and number spelling
/// untouched): the value itself, `@FILE` for a file's contents, or `-` for
/// standard input's.
pub(crate) fn json(s: &str) -> Result<Box<RawValue>, String> {
    let text = if s == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read standard input: {e}"))?
    } else if let Some(path) = s.strip_prefix('@') {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
    } else {
        s.to_owned()
    };
    RawValue::from_string(text.trim().to_owned()).map_err(|e| format!("not valid JSON: {e}"))
}

/// An RFC 3339 time such as `2026-01-31T09:00:00Z`, passed on as given.
pub(crate) fn rfc3339(s: &str) -> Result<String, String> {
    quern_core::time::parse_rfc3339(s)
        .map(|_| s.trim().to_owned())
        .ok_or_else(|| format!("`{s}` is not an RFC 3339 time such as 2026-01-31T09:00:00Z"))
}

/// Milliseconds of `d`, for the `*_ms` fields of the API.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_human_and_bare_forms() {
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("2 minutes"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1500"), Ok(Duration::from_millis(1500)));
        assert!(duration("soon").is_err());
        assert!(duration("-5s").is_err());
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(key_value("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(key_value("q=a=b"), Ok(("q".into(), "a=b".into())));
        assert_eq!(key_value("empty="), Ok(("empty".into(), String::new())));
        assert!(key_value("=v").is_err());
        assert!(key_value("novalue").is_err());
    }

    #[test]
    fn json_is_checked_and_kept_verbatim() {
        assert_eq!(json(r#" {"b": 1, "a": 2.50} "#).map(|v| v.get().to_owned()), Ok(r#"{"b": 1, "a": 2.50}"#.into()));
        assert_eq!(json("42").map(|v| v.get().to_owned()), Ok("42".into()));
        assert!(json("{oops}").is_err());
        assert!(json("").is_err());
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("input.json");
        std::fs::write(&file, "{\"to\": \"a@b.c\"}\n").expect("write");
        let from_file = json(&format!("@{}", file.display())).map(|v| v.get().to_owned());
        assert_eq!(from_file, Ok(r#"{"to": "a@b.c"}"#.into()));
        let missing = json(&format!("@{}", dir.path().join("none.json").display()));
        assert!(missing.is_err_and(|e| e.starts_with("cannot read")));
    }

    #[test]
    fn times_must_be_rfc3339() {
        assert_eq!(rfc3339("2026-01-31T09:00:00Z"), Ok("2026-01-31T09:00:00Z".into()));
        assert!(rfc3339("2026-01-31T09:00:00+01:00").is_ok());
        assert!(rfc3339("tomorrow").is_err());
    }
}
