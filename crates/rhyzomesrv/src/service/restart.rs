//! Restart policies: given how a run ended, restart (after a back-off), stay down, or give up.
//! Pure functions; the reconciler applies their decisions.

use crate::console::Outcome;
use rhyzome_api::{RestartMode, RestartPolicy, DEFAULT_MAX_RETRIES};
use std::time::Duration;

/// Back-off settings, from the daemon configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long resets the restart count: the instance was healthy.
    pub stable_after: Duration,
}

impl Backoff {
    /// Delay before restart number `attempt + 1`: doubling from `initial`, capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave the instance ended.
    Stay,
    /// Start it again after this delay; this will be restart number `attempt`.
    Restart { after: Duration, attempt: u32 },
    /// Too many restarts in a row: mark it failed, with this reason.
    GiveUp(String),
}

/// Whether an ended run counts as a failure for `on_failure`.
pub fn is_failure(policy: &RestartPolicy, outcome: Outcome) -> bool {
    match outcome {
        Outcome::Aborted | Outcome::Unknown => true,
        Outcome::Exited(code) => match &policy.exit_codes {
            Some(codes) => codes.contains(&code),
            None => code != 0,
        },
    }
}

fn describe(outcome: Outcome) -> String {
    match outcome {
        Outcome::Exited(code) => format!("exited with code {code}"),
        Outcome::Aborted => "crashed".into(),
        Outcome::Unknown => "stopped without an exit line".into(),
    }
}

/// `restarts_so_far` counts consecutive restarts already made; `ran_for` is how long the run
/// that just ended lasted.
pub fn decide(
    policy: &RestartPolicy,
    outcome: Outcome,
    restarts_so_far: u32,
    ran_for: Duration,
    backoff: &Backoff,
) -> Decision {
    let wants_restart = match policy.policy {
        RestartMode::Never => false,
        RestartMode::OnFailure => is_failure(policy, outcome),
        RestartMode::Always => true,
    };
    if !wants_restart {
        return Decision::Stay;
    }
    let done = if ran_for >= backoff.stable_after {
        0
    } else {
        restarts_so_far
    };
    let max = policy.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
    if done >= max {
        return Decision::GiveUp(format!(
            "restart loop: {} after {done} restarts in a row (max_retries {max})",
            describe(outcome)
        ));
    }
    Decision::Restart {
        after: backoff.delay(done),
        attempt: done + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1000),
        stable_after: Duration::from_secs(60),
    };
    const SHORT: Duration = Duration::from_secs(1);

    fn policy(mode: RestartMode, max: Option<u32>, codes: Option<Vec<i32>>) -> RestartPolicy {
        RestartPolicy {
            policy: mode,
            max_retries: max,
            exit_codes: codes,
        }
    }

    #[test]
    fn never_stays() {
        let p = policy(RestartMode::Never, None, None);
        assert_eq!(
            decide(&p, Outcome::Aborted, 0, SHORT, &BACKOFF),
            Decision::Stay
        );
    }

    #[test]
    fn on_failure_filters_by_exit_code() {
        let p = policy(RestartMode::OnFailure, None, None);
        assert_eq!(
            decide(&p, Outcome::Exited(0), 0, SHORT, &BACKOFF),
            Decision::Stay
        );
        assert!(matches!(
            decide(&p, Outcome::Exited(3), 0, SHORT, &BACKOFF),
            Decision::Restart { attempt: 1, .. }
        ));
        assert!(matches!(
            decide(&p, Outcome::Aborted, 0, SHORT, &BACKOFF),
            Decision::Restart { .. }
        ));
        let only_7 = policy(RestartMode::OnFailure, None, Some(vec![7]));
        assert_eq!(
            decide(&only_7, Outcome::Exited(3), 0, SHORT, &BACKOFF),
            Decision::Stay
        );
        assert!(matches!(
            decide(&only_7, Outcome::Exited(7), 0, SHORT, &BACKOFF),
            Decision::Restart { .. }
        ));
        // A crash is a failure whatever the filter.
        assert!(matches!(
            decide(&only_7, Outcome::Aborted, 0, SHORT, &BACKOFF),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn always_restarts_clean_exits_too() {
        let p = policy(RestartMode::Always, None, None);
        assert!(matches!(
            decide(&p, Outcome::Exited(0), 0, SHORT, &BACKOFF),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn back_off_doubles_up_to_the_cap_and_loops_give_up() {
        let p = policy(RestartMode::Always, Some(6), None);
        let delays: Vec<u64> = (0..6)
            .map(
                |n| match decide(&p, Outcome::Exited(1), n, SHORT, &BACKOFF) {
                    Decision::Restart { after, attempt } => {
                        assert_eq!(attempt, n + 1);
                        after.as_millis() as u64
                    }
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        match decide(&p, Outcome::Exited(1), 6, SHORT, &BACKOFF) {
            Decision::GiveUp(reason) => {
                assert!(
                    reason.contains("exited with code 1 after 6 restarts"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // The default bound applies without max_retries.
        let unbounded = policy(RestartMode::OnFailure, None, None);
        assert!(matches!(
            decide(
                &unbounded,
                Outcome::Aborted,
                DEFAULT_MAX_RETRIES,
                SHORT,
                &BACKOFF
            ),
            Decision::GiveUp(_)
        ));
    }

    #[test]
    fn a_stable_run_resets_the_count() {
        let p = policy(RestartMode::OnFailure, Some(2), None);
        let long = Duration::from_secs(120);
        assert_eq!(
            decide(&p, Outcome::Exited(1), 2, long, &BACKOFF),
            Decision::Restart {
                after: Duration::from_millis(100),
                attempt: 1
            }
        );
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(BACKOFF.delay(u32::MAX), Duration::from_millis(1000));
    }
}
