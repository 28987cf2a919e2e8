//! Events: what a publisher sends, what the log holds, and the filters a
//! subscriber reads it through.
//!
//! Invariant: an event's offset is its place in one log, growing by one per
//! event; an event never changes once written, and filters only select — a
//! reader that has seen offset N has seen every event at or below N that its
//! filter selects.

use crate::error::{ValidationError, ValidationResult};
use crate::spec::{MAX_NAME_LEN, check_identifier};
use crate::time::Millis;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// The longest payload, in bytes of JSON.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// An event as a publisher sends it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// Dotted, like a task name: `email.processed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who publishes: an agent, a service.
    pub source: String,
    /// The one agent it is for; absent is a broadcast.
    #[serde(default)]
    pub target: Option<String>,
    /// Any JSON; absent is `null`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub payload: Option<Box<RawValue>>,
}

/// A checked event, ready to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Its type.
    pub kind: String,
    /// Its source.
    pub source: String,
    /// Its target.
    pub target: Option<String>,
    /// Its payload, as JSON text.
    pub payload: String,
}

impl EventSpec {
    /// Checks every rule.
    pub fn validate(self) -> ValidationResult<NewEvent> {
        check_identifier("type", &self.kind, MAX_NAME_LEN)?;
        check_identifier("source", &self.source, MAX_NAME_LEN)?;
        if let Some(t) = &self.target {
            check_identifier("target", t, MAX_NAME_LEN)?;
        }
        let payload = self.payload.map_or_else(|| "null".to_owned(), |p| p.get().to_owned());
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(ValidationError::new("payload", format!("must be at most {MAX_PAYLOAD_BYTES} bytes of JSON")));
        }
        crate::check::check_json_depth("payload", &payload)?;
        Ok(NewEvent { kind: self.kind, source: self.source, target: self.target, payload })
    }
}

/// An event as the log holds it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the log, from 1.
    pub offset: u64,
    /// When it was appended.
    #[serde(serialize_with = "rfc3339", deserialize_with = "from_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Millis,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its source.
    pub source: String,
    /// Its target.
    pub target: Option<String>,
    /// Its payload.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub payload: Box<RawValue>,
}

fn rfc3339<S: Serializer>(at: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format_rfc3339(*at))
}

fn from_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
    let s = String::deserialize(d)?;
    crate::time::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}")))
}

/// Which events a subscriber reads.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventFilter {
    /// Type globs (`task.*`, `email.?rocessed`); any of them; none is all.
    pub types: Vec<String>,
    /// Only from this source.
    pub source: Option<String>,
    /// This subscriber's name: it sees broadcasts and events for it, never
    /// events for another target. Without it, a reader sees everything.
    pub target: Option<String>,
}

impl EventFilter {
    /// Whether `e` passes.
    pub fn selects(&self, kind: &str, source: &str, target: Option<&str>) -> bool {
        (self.types.is_empty() || self.types.iter().any(|g| glob_match(g, kind)))
            && self.source.as_deref().is_none_or(|s| s == source)
            && match (&self.target, target) {
                (Some(me), Some(t)) => me == t,
                _ => true,
            }
    }
}

/// `*` matches any run of characters (dots included), `?` any one.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match g.get(gi) {
            Some(b'*') => {
                star = Some((gi, ti));
                gi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                gi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    gi = sg + 1;
                    ti = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (g, t, want) in [
            ("task.*", "task.succeeded", true),
            ("task.*", "task.", true),
            ("task.*", "tasks.x", false),
            ("*", "anything.at.all", true),
            ("*.processed", "email.processed", true),
            ("email.?rocessed", "email.processed", true),
            ("email.processed", "email.processed", true),
            ("email.processed", "email.processe", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(glob_match(g, t), want, "{g} ~ {t}");
        }
    }

    #[test]
    fn targets_reach_only_their_target_and_broadcast_listeners() {
        let me = EventFilter { target: Some("support-bot".into()), ..EventFilter::default() };
        assert!(me.selects("x", "s", Some("support-bot")));
        assert!(me.selects("x", "s", None), "a broadcast");
        assert!(!me.selects("x", "s", Some("email-agent")));
        let all = EventFilter::default();
        assert!(all.selects("x", "s", Some("email-agent")), "no target: sees everything");
        let typed = EventFilter { types: vec!["task.*".into()], source: Some("quern".into()), target: None };
        assert!(typed.selects("task.failed", "quern", None));
        assert!(!typed.selects("task.failed", "agent", None));
        assert!(!typed.selects("workflow.failed", "quern", None));
    }

    #[test]
    fn specs_are_checked() {
        let spec = |j: &str| {
            serde_json::from_str::<EventSpec>(j)
                .map_err(|e| e.to_string())
                .and_then(|s| s.validate().map_err(|e| e.field))
        };
        assert!(spec(r#"{"type":"email.processed","source":"email-agent","payload":{"n":1}}"#).is_ok());
        assert_eq!(spec(r#"{"type":"bad type","source":"a"}"#).expect_err("bad type"), "type");
        assert_eq!(spec(r#"{"type":"a","source":""}"#).expect_err("empty source"), "source");
        assert_eq!(spec(r#"{"type":"a","source":"b","target":"no/slash"}"#).expect_err("bad target"), "target");
        assert!(spec(r#"{"type":"a","source":"b","extra":1}"#).is_err());
    }
}
