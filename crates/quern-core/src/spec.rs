//! A submission as clients send it, and the rules that turn it into a task.
//!
//! Invariant: [`TaskSpec::validate`] is the only way to build a [`NewTask`],
//! so everything a store inserts has passed every rule here.

pub use crate::check::{MAX_ERROR_MESSAGE_LEN, MAX_JSON_DEPTH, MAX_PROGRESS_MESSAGE_LEN, check_json_depth, check_text};
use crate::error::{ValidationError, ValidationResult};
use crate::retry::RetryPolicy;
use crate::status::Status;
use crate::task::Dependency;
use crate::time::{Millis, parse_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use uuid::Uuid;

/// The longest name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// The longest queue name, in bytes.
pub const MAX_QUEUE_LEN: usize = 100;
/// The most tasks one submission may depend on.
pub const MAX_DEPENDENCIES: usize = 100;
/// The most metadata entries a task may carry.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// The longest metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 128;
/// The longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 1_024;
/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// The longest timeout: 30 days.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3_600_000;
/// The longest delay: 366 days.
pub const MAX_DELAY_MS: u64 = 366 * 24 * 3_600_000;
/// The longest worker name, in bytes.
pub const MAX_WORKER_LEN: usize = 200;
/// The most queues, and the most task names, one lease may name.
pub const MAX_LEASE_NAMES: usize = 100;
/// The longest name in an approval's `by`, in bytes.
pub const MAX_APPROVER_LEN: usize = 200;
/// The longest approval comment, in bytes.
pub const MAX_COMMENT_LEN: usize = 4_096;

/// The most attempts a task may have.
pub const MAX_ATTEMPTS: u32 = 1_000;

/// What a task gets for each field its submission leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionDefaults {
    /// The queue.
    pub queue: String,
    /// The timeout of one attempt; `None` is no timeout.
    pub timeout_ms: Option<u64>,
    /// The number of attempts.
    pub max_attempts: u32,
    /// The retry policy.
    pub retry: RetryPolicy,
}

impl Default for ExecutionDefaults {
    fn default() -> Self {
        Self { queue: "default".to_owned(), timeout_ms: None, max_attempts: 1, retry: RetryPolicy::default() }
    }
}

impl ExecutionDefaults {
    /// Checks the defaults by the same rules as a submission.
    pub fn validate(&self) -> ValidationResult<()> {
        check_identifier("queue", &self.queue, MAX_QUEUE_LEN)?;
        check_timeout(self.timeout_ms)?;
        check_attempts(self.max_attempts)?;
        self.retry.validate("retry")
    }
}

/// A task submission, exactly as a client sends it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The task type.
    pub name: String,
    /// The JSON input; absent is `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub input: Option<Box<RawValue>>,
    /// The queue; absent is the configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Labels: strings, numbers or booleans.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: crate::task::Metadata,
    /// Run no sooner than this many milliseconds from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Run no sooner than this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// The longest one attempt may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// How many attempts it may have in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// When a failed attempt is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Submitting twice with one key yields one task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Tasks submitted earlier that this one waits for, each with its
    /// condition (`success` when left out): it stays pending until every
    /// edge holds, and is skipped when one no longer can.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<crate::task::Dependency>,
    /// The W3C trace context the task continues
    /// (`00-<trace id>-<parent id>-<flags>`); the `traceparent` header of
    /// the submit when left out. Kept with the task and handed to its
    /// worker; not part of its digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl TaskSpec {
    /// A spec with only a name: the rest takes the defaults.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            input: None,
            queue: None,
            priority: 0,
            metadata: BTreeMap::new(),
            delay_ms: None,
            run_at: None,
            timeout_ms: None,
            max_attempts: None,
            retry: None,
            idempotency_key: None,
            depends_on: Vec::new(),
            traceparent: None,
        }
    }

    /// Checks every rule and applies `defaults`, giving the task to insert
    /// with id `id`, submitted at `now`.
    pub fn validate(self, defaults: &ExecutionDefaults, id: Uuid, now: Millis) -> ValidationResult<NewTask> {
        check_identifier("name", &self.name, MAX_NAME_LEN)?;
        let queue = self.queue.unwrap_or_else(|| defaults.queue.clone());
        check_identifier("queue", &queue, MAX_QUEUE_LEN)?;
        check_metadata(&self.metadata)?;
        let timeout_ms = self.timeout_ms.or(defaults.timeout_ms);
        check_timeout(timeout_ms)?;
        let max_attempts = self.max_attempts.unwrap_or(defaults.max_attempts);
        check_attempts(max_attempts)?;
        let retry = self.retry.unwrap_or(defaults.retry);
        retry.validate("retry")?;
        if let Some(key) = &self.idempotency_key {
            if key.is_empty() {
                return Err(ValidationError::new(
                    "idempotency_key",
                    format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
                ));
            }
            check_text("idempotency_key", key, MAX_IDEMPOTENCY_KEY_LEN)?;
        }
        let run_at = match (self.delay_ms, &self.run_at) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::new("run_at", "give delay_ms or run_at, not both"));
            }
            (Some(delay), None) if delay > MAX_DELAY_MS => {
                return Err(ValidationError::new("delay_ms", format!("must be at most {MAX_DELAY_MS} (366 days)")));
            }
            (Some(delay), None) => now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
            (None, Some(at)) => {
                let at = parse_rfc3339(at).ok_or_else(|| {
                    ValidationError::new("run_at", "must be an RFC 3339 time such as 2026-01-31T09:00:00Z")
                })?;
                if at.saturating_sub(now) > i64::try_from(MAX_DELAY_MS).unwrap_or(i64::MAX) {
                    return Err(ValidationError::new("run_at", "must be within 366 days from now"));
                }
                at.max(now)
            }
            (None, None) => now,
        };
        check_dependencies(&self.depends_on)?;
        if let Some(tp) = &self.traceparent {
            check_traceparent(tp)?;
        }
        let input = self.input.map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned());
        check_json_depth("input", &input)?;
        let digest =
            spec_digest(&self.name, &queue, &input, self.priority, &self.metadata, max_attempts, timeout_ms, &retry);
        Ok(NewTask {
            id,
            name: self.name,
            queue,
            input,
            status: if run_at > now || !self.depends_on.is_empty() { Status::Pending } else { Status::Queued },
            priority: self.priority,
            metadata: self.metadata,
            max_attempts,
            timeout_ms,
            retry,
            run_at,
            idempotency_key: self.idempotency_key,
            digest,
            created_at: now,
            depends_on: self.depends_on,
            workflow: None,
            key: None,
            traceparent: self.traceparent,
        })
    }
}

/// A validated task, ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Its id.
    pub id: Uuid,
    /// The task type.
    pub name: String,
    /// The queue.
    pub queue: String,
    /// The input, as JSON text.
    pub input: String,
    /// `queued`, or `pending` when it waits for a time or for parents.
    pub status: Status,
    /// Higher runs first.
    pub priority: i32,
    /// Labels.
    pub metadata: crate::task::Metadata,
    /// Attempts it may have.
    pub max_attempts: u32,
    /// The longest one attempt may run.
    pub timeout_ms: Option<u64>,
    /// The retry policy.
    pub retry: RetryPolicy,
    /// When it becomes runnable.
    pub run_at: Millis,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// The digest of its canonical spec.
    pub digest: String,
    /// When it was submitted.
    pub created_at: Millis,
    /// Its parents.
    pub depends_on: Vec<Dependency>,
    /// Its workflow.
    pub workflow: Option<Uuid>,
    /// Its key in its workflow.
    pub key: Option<String>,
    /// The W3C trace context it continues.
    pub traceparent: Option<String>,
}

/// Checks a W3C `traceparent`: `00-` (or a later version), 32 lowercase hex
/// digits of trace id, 16 of parent id, 2 of flags, the ids not all zero.
pub fn check_traceparent(tp: &str) -> ValidationResult<()> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let parts: Vec<&str> = tp.splitn(5, '-').collect();
    let valid = match parts.as_slice() {
        [version, trace, parent, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && trace.bytes().any(|b| b != b'0')
                && hex(parent, 16)
                && parent.bytes().any(|b| b != b'0')
                && hex(flags, 2)
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ValidationError::new(
            "traceparent",
            "must be a W3C trace context: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>",
        ))
    }
}

/// Checks a task name by the rules a submission's `name` obeys.
pub fn check_task_name(name: &str) -> ValidationResult<()> {
    check_identifier("name", name, MAX_NAME_LEN)
}

/// Checks a name a lease asks for: a task name, or a prefix of one followed
/// by `*` (`email.*`, `reports:*`, `*`).
fn check_lease_name(name: &str) -> ValidationResult<()> {
    match name.strip_suffix('*') {
        Some("") => Ok(()),
        Some(prefix) => check_task_name(prefix),
        None => check_task_name(name),
    }
}

/// Whether the task `name` is one a lease's `pattern` asks for: the same
/// name, or, for a pattern ending in `*`, any name starting with what
/// comes before it.
pub fn lease_name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Checks a queue name by the rules a submission's `queue` obeys.
pub fn check_queue_name(queue: &str) -> ValidationResult<()> {
    check_identifier("queue", queue, MAX_QUEUE_LEN)
}

pub(crate) fn check_identifier(field: &str, value: &str, max: usize) -> ValidationResult<()> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be 1 to {max} characters of A-Z, a-z, 0-9, '_', '.', ':' or '-' (got {value:?})"),
        ))
    }
}

fn check_metadata(metadata: &crate::task::Metadata) -> ValidationResult<()> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ValidationError::new("metadata", format!("at most {MAX_METADATA_ENTRIES} entries")));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.len() > MAX_METADATA_KEY_LEN || k.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "metadata",
                format!("keys must be 1 to {MAX_METADATA_KEY_LEN} bytes without control characters (got {k:?})"),
            ));
        }
        let field = format!("metadata.{k}");
        match v {
            serde_json::Value::String(text) => check_text(&field, text, MAX_METADATA_VALUE_LEN)?,
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {}
            _ => return Err(ValidationError::new(field, "must be a string, a number or a boolean")),
        }
    }
    Ok(())
}

/// Checks a submission's edges to tasks submitted earlier: at most
/// [`MAX_DEPENDENCIES`], each parent once, each expression valid CEL.
fn check_dependencies(deps: &[crate::task::Dependency]) -> ValidationResult<()> {
    if deps.len() > MAX_DEPENDENCIES {
        return Err(ValidationError::new("depends_on", format!("at most {MAX_DEPENDENCIES} tasks")));
    }
    for (i, d) in deps.iter().enumerate() {
        if deps[..i].iter().any(|e| e.task == d.task) {
            return Err(ValidationError::new(format!("depends_on[{i}].task"), "names a task already listed"));
        }
        if let crate::task::Condition::Expr { expr } = &d.on {
            crate::workflow::compile_expr(expr).map_err(|e| {
                ValidationError::new(format!("depends_on[{i}].on.expr"), format!("not a valid CEL expression: {e}"))
            })?;
        }
    }
    Ok(())
}

/// A metadata value as a filter or a command-line `key=value` writes it:
/// `true` and `false` are booleans, a JSON number is a number, a JSON string
/// in quotes (`"5"`) is that string, and anything else is the text itself.
pub fn metadata_value(text: &str) -> serde_json::Value {
    match text {
        "true" => return serde_json::Value::Bool(true),
        "false" => return serde_json::Value::Bool(false),
        _ => {}
    }
    let json = text.starts_with(|c: char| c == '"' || c == '-' || c.is_ascii_digit());
    if json
        && text.trim() == text
        && let Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::String(_))) = serde_json::from_str(text)
    {
        return v;
    }
    serde_json::Value::String(text.to_owned())
}

/// Checks a worker's name: 1 to [`MAX_WORKER_LEN`] bytes without NUL.
pub fn check_worker_name(worker: &str) -> ValidationResult<()> {
    if worker.is_empty() {
        return Err(ValidationError::new("worker", format!("must be 1 to {MAX_WORKER_LEN} bytes")));
    }
    check_text("worker", worker, MAX_WORKER_LEN)
}

/// Checks what a lease names: the queues, and the task names if given, at
/// most [`MAX_LEASE_NAMES`] of each, each by the rules a submission's
/// `queue` (or `name`) obeys; an error names `queues[i]` or `names[i]`.
pub fn check_lease_names(queues: &[String], names: Option<&[String]>) -> ValidationResult<()> {
    type Check = fn(&str) -> ValidationResult<()>;
    let lists: [(&str, &[String], Check); 2] =
        [("queues", queues, check_queue_name), ("names", names.unwrap_or_default(), check_lease_name)];
    for (field, list, check) in lists {
        if list.len() > MAX_LEASE_NAMES {
            return Err(ValidationError::new(field, format!("at most {MAX_LEASE_NAMES}")));
        }
        for (i, name) in list.iter().enumerate() {
            check(name).map_err(|e| e.at(format!("{field}[{i}]")))?;
        }
    }
    Ok(())
}

fn check_timeout(timeout_ms: Option<u64>) -> ValidationResult<()> {
    match timeout_ms {
        Some(0) => Err(ValidationError::new("timeout_ms", "must be at least 1")),
        Some(t) if t > MAX_TIMEOUT_MS => {
            Err(ValidationError::new("timeout_ms", format!("must be at most {MAX_TIMEOUT_MS} (30 days)")))
        }
        _ => Ok(()),
    }
}

fn check_attempts(max_attempts: u32) -> ValidationResult<()> {
    if (1..=MAX_ATTEMPTS).contains(&max_attempts) {
        Ok(())
    } else {
        Err(ValidationError::new("max_attempts", format!("must be 1 to {MAX_ATTEMPTS}")))
    }
}

/// The SHA-256 of a task's canonical spec (its sorted-key JSON), as
/// `sha256:<hex>`. Two submissions that would run the same way digest alike,
/// whatever their key order or whitespace.
#[allow(clippy::too_many_arguments)]
pub fn spec_digest(
    name: &str,
    queue: &str,
    input: &str,
    priority: i32,
    metadata: &crate::task::Metadata,
    max_attempts: u32,
    timeout_ms: Option<u64>,
    retry: &RetryPolicy,
) -> String {
    // The canonical spec is written straight out, keys in sorted order,
    // rather than built as a `serde_json::Value` first: this runs on every
    // submission.
    let mut out = String::with_capacity(input.len() + 256);
    out.push_str("{\"input\":");
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(v) => write_canonical(&v, &mut out),
        Err(_) => out.push_str("null"),
    }
    let _ = write!(out, ",\"max_attempts\":{max_attempts},\"metadata\":{{");
    for (i, (k, v)) in metadata.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(k, &mut out);
        out.push(':');
        write_canonical(v, &mut out);
    }
    out.push_str("},\"name\":");
    write_json_string(name, &mut out);
    let _ = write!(out, ",\"priority\":{priority},\"queue\":");
    write_json_string(queue, &mut out);
    let backoff = match retry.backoff {
        crate::retry::Backoff::Exponential => "exponential",
        crate::retry::Backoff::Fixed => "fixed",
    };
    let _ = write!(
        out,
        ",\"retry\":{{\"backoff\":\"{backoff}\",\"initial_ms\":{},\"jitter\":{},\"max_ms\":{}}},\"timeout_ms\":",
        retry.initial_ms,
        serde_json::Value::from(retry.jitter),
        retry.max_ms
    );
    match timeout_ms {
        Some(t) => {
            let _ = write!(out, "{t}}}");
        }
        None => out.push_str("null}"),
    }
    digest_text(&Sha256::digest(out.as_bytes()))
}

/// A SHA-256 hash as a digest's text: `sha256:` and the hash in lowercase
/// hex. Stores that keep the hash as bytes give it back through this.
pub fn digest_text(hash: &[u8]) -> String {
    let mut digest = String::with_capacity(7 + 2 * hash.len());
    digest.push_str("sha256:");
    push_hex(&mut digest, hash);
    digest
}

/// `bytes` in lowercase hex, without `fmt` (it runs on request paths).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

fn write_json_string(s: &str, out: &mut String) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// Writes `v` as JSON with object keys sorted, no whitespace.
fn write_canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        serde_json::Value::String(text) => write_json_string(text, out),
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_800_000_000_000;

    fn spec(json: &str) -> TaskSpec {
        serde_json::from_str(json).expect("test spec parses")
    }

    fn check(json: &str) -> ValidationResult<NewTask> {
        spec(json).validate(&ExecutionDefaults::default(), Uuid::now_v7(), NOW)
    }

    fn field_of(json: &str) -> String {
        check(json).err().map(|e| e.field).unwrap_or_default()
    }

    #[test]
    fn json_nested_deeper_than_the_limit_is_refused() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(check(&format!(r#"{{"name":"t","input":{}}}"#, nested(MAX_JSON_DEPTH))).is_ok());
        assert_eq!(field_of(&format!(r#"{{"name":"t","input":{}}}"#, nested(MAX_JSON_DEPTH + 1))), "input");
        // Brackets inside strings do not count; escaped quotes do not end one.
        let text = format!(r#"{{"a":"\"{}"}}"#, "[{".repeat(100));
        assert!(check_json_depth("x", &text).is_ok());
        let objects = format!("{}{}", r#"{"a":"#.repeat(65), "}".repeat(65));
        assert!(check_json_depth("x", &objects).is_err());
        let deep = nested(5_000);
        assert!(check_json_depth("x", &deep).is_err());
    }

    #[test]
    fn a_lease_names_at_most_a_hundred_valid_queues_and_names() {
        let many: Vec<String> = (0..=MAX_LEASE_NAMES).map(|i| format!("q{i}")).collect();
        assert_eq!(check_lease_names(&many, None).map_err(|e| e.field), Err("queues".into()));
        assert_eq!(check_lease_names(&many[..1], Some(&many)).map_err(|e| e.field), Err("names".into()));
        let bad = ["default".to_owned(), "../x".to_owned()];
        assert_eq!(check_lease_names(&bad, None).map_err(|e| e.field), Err("queues[1]".into()));
        assert_eq!(check_lease_names(&many[..1], Some(&bad[..])).map_err(|e| e.field), Err("names[1]".into()));
        assert!(check_lease_names(&many[..MAX_LEASE_NAMES], Some(&many[..MAX_LEASE_NAMES])).is_ok());
        let patterns = ["email.*".to_owned(), "reports:*".to_owned(), "*".to_owned()];
        assert!(check_lease_names(&many[..1], Some(&patterns)).is_ok(), "prefixes end in *");
        for bad in ["a*b", "**", "bad name*", "*x"] {
            let names = [bad.to_owned()];
            assert_eq!(
                check_lease_names(&many[..1], Some(&names)).map_err(|e| e.field),
                Err("names[0]".into()),
                "{bad}"
            );
        }
        assert!(lease_name_matches("email.*", "email.send") && !lease_name_matches("email.*", "emails"));
        assert!(
            lease_name_matches("*", "anything")
                && lease_name_matches("add", "add")
                && !lease_name_matches("add", "adder")
        );
        assert!(check_worker_name("").is_err() && check_worker_name(&"w".repeat(201)).is_err());
    }

    #[test]
    fn nul_characters_and_control_keys_are_refused() {
        assert_eq!(field_of(r#"{"name":"t","metadata":{"k":"a\u0000b"}}"#), "metadata.k");
        assert_eq!(field_of(r#"{"name":"t","metadata":{"k\u0000":"v"}}"#), "metadata");
        assert_eq!(field_of(r#"{"name":"t","idempotency_key":"a\u0000"}"#), "idempotency_key");
        assert!(check_text("m", "fine", 10).is_ok());
        assert!(check_text("m", "too long!!!", 10).is_err());
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let t = check(r#"{"name":"email.send"}"#).expect("valid");
        assert_eq!(t.queue, "default");
        assert_eq!(t.input, "null");
        assert_eq!(t.status, Status::Queued);
        assert_eq!(t.max_attempts, 1);
        assert_eq!(t.run_at, NOW);
        assert!(t.digest.starts_with("sha256:") && t.digest.len() == 71);
    }

    #[test]
    fn names_follow_the_charset() {
        assert!(check(r#"{"name":"a.b:c_d-9"}"#).is_ok());
        assert_eq!(field_of(r#"{"name":""}"#), "name");
        assert_eq!(field_of(r#"{"name":"has space"}"#), "name");
        assert_eq!(field_of(r#"{"name":"slash/y"}"#), "name");
        assert_eq!(field_of(&format!(r#"{{"name":"{}"}}"#, "x".repeat(201))), "name");
        assert_eq!(field_of(r#"{"name":"ok","queue":"bad queue"}"#), "queue");
    }

    #[test]
    fn unknown_fields_and_wrong_types_do_not_parse() {
        assert!(serde_json::from_str::<TaskSpec>(r#"{"name":"a","delay":5}"#).is_err());
        assert!(serde_json::from_str::<TaskSpec>(r#"{"name":5}"#).is_err());
        assert!(serde_json::from_str::<TaskSpec>(r#"{"input":{}}"#).is_err());
        assert!(serde_json::from_str::<TaskSpec>(r#"{"name":"a","timeout_ms":-1}"#).is_err());
        assert!(serde_json::from_str::<TaskSpec>(r#"{"name":"a","priority":1e12}"#).is_err());
    }

    #[test]
    fn timeouts_attempts_and_delays_are_bounded() {
        assert_eq!(field_of(r#"{"name":"a","timeout_ms":0}"#), "timeout_ms");
        assert_eq!(field_of(r#"{"name":"a","timeout_ms":99999999999999}"#), "timeout_ms");
        assert_eq!(field_of(r#"{"name":"a","max_attempts":0}"#), "max_attempts");
        assert_eq!(field_of(r#"{"name":"a","max_attempts":1001}"#), "max_attempts");
        assert_eq!(field_of(r#"{"name":"a","delay_ms":99999999999999}"#), "delay_ms");
        assert_eq!(field_of(r#"{"name":"a","delay_ms":5,"run_at":"2030-01-01T00:00:00Z"}"#), "run_at");
        assert_eq!(field_of(r#"{"name":"a","run_at":"tomorrow"}"#), "run_at");
        assert_eq!(field_of(r#"{"name":"a","retry":{"initial_ms":10,"max_ms":1}}"#), "retry.max_ms");
    }

    #[test]
    fn delays_make_pending_tasks() {
        let t = check(r#"{"name":"a","delay_ms":1500}"#).expect("valid");
        assert_eq!((t.status, t.run_at), (Status::Pending, NOW + 1500));
        let past = check(r#"{"name":"a","run_at":"2000-01-01T00:00:00Z"}"#).expect("valid");
        assert_eq!((past.status, past.run_at), (Status::Queued, NOW));
    }

    #[test]
    fn metadata_values_are_typed_and_digest_by_type() {
        use serde_json::json;
        for (text, value) in [
            ("prod", json!("prod")),
            ("5", json!(5)),
            ("-2.5", json!(-2.5)),
            ("true", json!(true)),
            ("false", json!(false)),
            ("\"5\"", json!("5")),
            ("007", json!("007")),
            ("5 ", json!("5 ")),
            ("1e3", json!(1000.0)),
            ("\"unclosed", json!("\"unclosed")),
        ] {
            assert_eq!(metadata_value(text), value, "{text}");
        }
        let typed = TaskSpec { metadata: [("n".to_owned(), json!(5))].into(), ..TaskSpec::named("a") };
        let text = TaskSpec { metadata: [("n".to_owned(), json!("5"))].into(), ..TaskSpec::named("a") };
        let digest = |s: TaskSpec| s.validate(&ExecutionDefaults::default(), Uuid::now_v7(), NOW).map(|t| t.digest);
        assert_ne!(digest(typed).ok(), digest(text).ok(), "5 and \"5\" are different specs");
    }

    #[test]
    fn dependencies_are_bounded_distinct_and_valid() {
        let id = Uuid::now_v7();
        let edge = |task: Uuid, on: &str| format!(r#"{{"task":"{task}","on":{on}}}"#);
        let spec = |edges: &[String]| format!(r#"{{"name":"a","depends_on":[{}]}}"#, edges.join(","));
        assert_eq!(field_of(&spec(&[edge(id, r#""success""#), edge(id, r#""failure""#)])), "depends_on[1].task");
        assert_eq!(field_of(&spec(&[edge(id, r#"{"expr":"status =="}"#)])), "depends_on[0].on.expr");
        let many: Vec<String> = (0..=MAX_DEPENDENCIES).map(|_| edge(Uuid::now_v7(), r#""completion""#)).collect();
        assert_eq!(field_of(&spec(&many)), "depends_on");
        let fine: TaskSpec = serde_json::from_str(&spec(&many[..MAX_DEPENDENCIES])).expect("a spec");
        let task = fine.validate(&ExecutionDefaults::default(), Uuid::now_v7(), NOW).expect("valid");
        assert_eq!((task.status, task.depends_on.len()), (Status::Pending, MAX_DEPENDENCIES), "it waits");
    }

    #[test]
    fn metadata_is_bounded() {
        let many: crate::task::Metadata = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        let mut s = TaskSpec::named("a");
        s.metadata = many;
        assert!(s.validate(&ExecutionDefaults::default(), Uuid::now_v7(), NOW).is_err());
        let long = format!(r#"{{"name":"a","metadata":{{"k":"{}"}}}}"#, "v".repeat(1025));
        assert_eq!(field_of(&long), "metadata.k");
        assert_eq!(field_of(r#"{"name":"a","metadata":{"k":null}}"#), "metadata.k", "null");
        assert_eq!(field_of(r#"{"name":"a","metadata":{"k":[1]}}"#), "metadata.k", "an array");
        assert_eq!(field_of(r#"{"name":"a","metadata":{"k":{"a":1}}}"#), "metadata.k", "an object");
    }

    #[test]
    fn digest_ignores_key_order_and_whitespace() {
        let a = check(r#"{"name":"a","input":{"x":1,"y":[1,2]}}"#).expect("valid");
        let b = check(r#"{"input":{ "y":[1, 2], "x":1 },"name":"a"}"#).expect("valid");
        let c = check(r#"{"name":"a","input":{"x":2,"y":[1,2]}}"#).expect("valid");
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn digest_is_the_sha256_of_the_sorted_spec() {
        // Pinned: changing the canonical form changes every stored digest.
        let t =
            check(r#"{"name":"a","input":{"b":[1,{"d":2,"c":"x"}],"a":null},"metadata":{"k":"v"}}"#).expect("valid");
        let canonical = r#"{"input":{"a":null,"b":[1,{"c":"x","d":2}]},"max_attempts":1,"metadata":{"k":"v"},"name":"a","priority":0,"queue":"default","retry":{"backoff":"exponential","initial_ms":1000,"jitter":0.0,"max_ms":300000},"timeout_ms":null}"#;
        let hash = Sha256::digest(canonical.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(t.digest, format!("sha256:{hex}"));
    }

    #[test]
    fn canonical_numbers_are_pinned() {
        // Pinned: workers in other languages write this form to check a
        // lease's signature (the Python SDK's `_integrity.canonical`).
        let text = r#"[1e20,1e-7,1.5e-7,0.0001,1e-5,1.25e-5,1e15,1e16,-0.0,100,1.0,18446744073709551616,-9223372036854775809]"#;
        let value: serde_json::Value = serde_json::from_str(text).expect("json");
        let mut out = String::new();
        write_canonical(&value, &mut out);
        assert_eq!(
            out,
            "[1e+20,1e-7,1.5e-7,0.0001,0.00001,0.0000125,1000000000000000.0,1e+16,-0.0,100,1.0,\
             1.8446744073709552e+19,-9.223372036854776e+18]"
        );
    }

    #[test]
    fn defaults_are_validated_too() {
        assert!(ExecutionDefaults::default().validate().is_ok());
        let bad = ExecutionDefaults { max_attempts: 0, ..ExecutionDefaults::default() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn a_traceparent_must_be_a_w3c_trace_context() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(check_traceparent(ok).is_ok());
        assert!(check_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later").is_ok());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(check_traceparent(bad).map_err(|e| e.field), Err("traceparent".into()), "{bad:?}");
        }
        let spec: TaskSpec = serde_json::from_str(&format!(r#"{{"name":"a","traceparent":"{ok}"}}"#)).expect("parses");
        let plain = TaskSpec::named("a").validate(&ExecutionDefaults::default(), Uuid::nil(), 0).expect("valid");
        let traced = spec.validate(&ExecutionDefaults::default(), Uuid::nil(), 0).expect("valid");
        assert_eq!(traced.traceparent.as_deref(), Some(ok));
        assert_eq!(traced.digest, plain.digest, "the trace context is not part of the digest");
    }
}
