//! Retry policies and the backoff they give.
//!
//! Invariant: the delay before attempt `n + 1` lies in
//! `[base * (1 - jitter), base]` where `base` is the policy's undisturbed delay
//! for attempt `n`, and never exceeds `max_ms`.

use crate::error::{ValidationError, ValidationResult};
use serde::{Deserialize, Serialize};

/// How the delay grows between attempts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// `initial_ms * 2^(attempt - 1)`, capped at `max_ms`.
    #[default]
    Exponential,
    /// Always `initial_ms`.
    Fixed,
}

/// When a failed attempt is tried again.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// How the delay grows.
    pub backoff: Backoff,
    /// The delay after the first failed attempt.
    pub initial_ms: u64,
    /// The longest delay.
    pub max_ms: u64,
    /// The fraction (0 to 1) of each delay that is randomised away, so that
    /// tasks failing together do not retry together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { backoff: Backoff::Exponential, initial_ms: 1_000, max_ms: 300_000, jitter: 0.0 }
    }
}

/// The longest delay a policy may ask for: one week.
pub const MAX_RETRY_DELAY_MS: u64 = 7 * 24 * 3_600_000;

impl RetryPolicy {
    /// Checks the policy's bounds. `field` prefixes the field names in errors.
    pub fn validate(&self, field: &str) -> ValidationResult<()> {
        if self.initial_ms > MAX_RETRY_DELAY_MS {
            return Err(ValidationError::new(
                format!("{field}.initial_ms"),
                format!("must be at most {MAX_RETRY_DELAY_MS} (one week)"),
            ));
        }
        if self.max_ms > MAX_RETRY_DELAY_MS {
            return Err(ValidationError::new(
                format!("{field}.max_ms"),
                format!("must be at most {MAX_RETRY_DELAY_MS} (one week)"),
            ));
        }
        if self.max_ms < self.initial_ms {
            return Err(ValidationError::new(format!("{field}.max_ms"), "must not be less than initial_ms"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ValidationError::new(format!("{field}.jitter"), "must be between 0 and 1"));
        }
        Ok(())
    }

    /// The delay before the next attempt, without jitter, after `attempt`
    /// (1-based) failed.
    pub fn base_delay_ms(&self, attempt: u32) -> u64 {
        match self.backoff {
            Backoff::Fixed => self.initial_ms,
            Backoff::Exponential => {
                let shift = attempt.saturating_sub(1).min(63);
                self.initial_ms.saturating_mul(1u64 << shift).min(self.max_ms)
            }
        }
        .min(self.max_ms.max(self.initial_ms))
    }

    /// The delay before the next attempt after `attempt` failed. `unit` is a
    /// random number in `[0, 1)` that decides the jitter.
    pub fn delay_ms(&self, attempt: u32, unit: f64) -> u64 {
        let base = self.base_delay_ms(attempt);
        let unit = unit.clamp(0.0, 1.0);
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let cut = (base as f64 * self.jitter * unit) as u64;
        base - cut.min(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let p = RetryPolicy { initial_ms: 100, max_ms: 1_000, ..RetryPolicy::default() };
        let got: Vec<_> = (1..=6).map(|a| p.delay_ms(a, 0.0)).collect();
        assert_eq!(got, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn fixed_stays_put() {
        let p = RetryPolicy { backoff: Backoff::Fixed, initial_ms: 250, max_ms: 250, jitter: 0.0 };
        assert!((1..10).all(|a| p.delay_ms(a, 0.7) == 250));
    }

    #[test]
    fn bounds_are_checked() {
        let ok = RetryPolicy::default();
        assert!(ok.validate("retry").is_ok());
        let bad = RetryPolicy { initial_ms: 10, max_ms: 5, ..ok };
        assert_eq!(bad.validate("retry").map_err(|e| e.field), Err("retry.max_ms".into()));
        let bad = RetryPolicy { jitter: 1.5, ..ok };
        assert_eq!(bad.validate("retry").map_err(|e| e.field), Err("retry.jitter".into()));
        let bad = RetryPolicy { initial_ms: u64::MAX, max_ms: u64::MAX, ..ok };
        assert!(bad.validate("retry").is_err());
    }

    fn any_policy() -> impl Strategy<Value = RetryPolicy> {
        (prop::bool::ANY, 0..=MAX_RETRY_DELAY_MS, 0..=MAX_RETRY_DELAY_MS, 0.0..=1.0f64).prop_map(
            |(fixed, a, b, jitter)| RetryPolicy {
                backoff: if fixed { Backoff::Fixed } else { Backoff::Exponential },
                initial_ms: a.min(b),
                max_ms: a.max(b),
                jitter,
            },
        )
    }

    proptest! {
        #[test]
        fn delay_stays_within_its_bounds(p in any_policy(), attempt in 0u32..200, unit in 0.0..1.0f64) {
            let base = p.base_delay_ms(attempt);
            let d = p.delay_ms(attempt, unit);
            prop_assert!(d <= base);
            prop_assert!(d <= p.max_ms);
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let floor = (base as f64 * (1.0 - p.jitter)) as u64;
            prop_assert!(d + 1 >= floor, "{d} < {floor}");
        }

        #[test]
        fn exponential_never_shrinks(p in any_policy(), attempt in 1u32..100) {
            prop_assert!(p.base_delay_ms(attempt + 1) >= p.base_delay_ms(attempt));
        }
    }
}

/// A number in `[0, 1)` derived from a task id and attempt: the jitter of that
/// attempt's retry. Deterministic, so stores and tests agree, yet spread
/// evenly across tasks so that a burst of failures does not retry in step.
pub fn jitter_unit(id: u128, attempt: u32) -> f64 {
    // splitmix64 over the id's halves and the attempt.
    #[allow(clippy::cast_possible_truncation)]
    let mut z =
        (id as u64) ^ ((id >> 64) as u64).rotate_left(17) ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    #[allow(clippy::cast_precision_loss)]
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

#[cfg(test)]
mod jitter_tests {
    use super::jitter_unit;

    #[test]
    fn jitter_units_are_in_range_and_spread() {
        let units: Vec<f64> = (0..1000u128).map(|i| jitter_unit(i << 70 | i, 1)).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        let low = units.iter().filter(|u| **u < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 below 0.5");
    }
}
