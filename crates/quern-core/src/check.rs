//! The rules every free-form field of every request shares, whatever it
//! belongs to (a task spec, a worker's progress or error, an event): how
//! long text may be, and how deep JSON may nest.
//!
//! Invariant: no text with a NUL and no JSON deeper than [`MAX_JSON_DEPTH`]
//! passes these checks, so no store and no reader meets either.

use crate::error::{ValidationError, ValidationResult};

/// The deepest nesting of arrays and objects Quern takes in any JSON a
/// client sends: input, results, error details, event payloads, schemas.
/// Deeper JSON is refused, so no reader (a worker in any language, the
/// server itself) meets a document that exhausts its stack.
pub const MAX_JSON_DEPTH: usize = 64;
/// The longest progress message, in bytes.
pub const MAX_PROGRESS_MESSAGE_LEN: usize = 1_024;
/// The longest error message a worker reports, in bytes.
pub const MAX_ERROR_MESSAGE_LEN: usize = 65_536;

/// Checks free text a client sends: at most `max` bytes, and no NUL (which
/// PostgreSQL cannot store and C-string readers cut at).
pub fn check_text(field: &str, value: &str, max: usize) -> ValidationResult<()> {
    if value.len() > max {
        return Err(ValidationError::new(field, format!("must be at most {max} bytes (got {})", value.len())));
    }
    if value.contains('\0') {
        return Err(ValidationError::new(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// Checks that `json` (valid JSON text) nests arrays and objects at most
/// [`MAX_JSON_DEPTH`] deep. One pass over the bytes, no recursion.
pub fn check_json_depth(field: &str, json: &str) -> ValidationResult<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ValidationError::too_deep(field, MAX_JSON_DEPTH));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
