//! Who is calling: the principal every engine operation takes, so that
//! every door (HTTP, and the doors to come) hands the engine the same
//! thing to decide on.
//!
//! Invariant: a door never decides access itself; it names the caller and
//! the engine admits it or not ([`crate::Engine::admit`]).

use std::fmt;

/// The principal behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A request that carries no credentials. Until tokens exist (the
    /// security work, issue 21) every request is anonymous and may do
    /// everything, as before.
    Anonymous,
    /// The server itself: the schedules file applied at start, the
    /// scheduler's firings.
    Server,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Anonymous => f.write_str("anonymous"),
            Caller::Server => f.write_str("server"),
        }
    }
}
