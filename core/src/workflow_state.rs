//! The workflow state machine. Terminal states are final; every other move
//! not listed here is an [`IllegalTransition`].
//!
//! ```text
//! PENDING ──▶ PROCESSING ──▶ COMPLETED
//!    │            ├────────▶ FAILED ──▶ PENDING   (RetryWorkflow)
//!    │            ├────────▶ CANCELLED
//!    │            └────────▶ WAITING  (an approval or a timer step)
//!    ├──▶ FAILED      (invalid input)
//!    └──▶ CANCELLED   (cancelled before it started)
//!
//! WAITING ──▶ PROCESSING (the timer fired) | PENDING (approved)
//!         ──▶ FAILED (rejected, timed out) | CANCELLED
//! PENDING, PROCESSING, WAITING ──▶ PAUSED ──▶ PENDING (resumed) | CANCELLED
//! ```
//!
//! Completed, failed and cancelled workflows are terminal: nothing runs them
//! again, except that RetryWorkflow may move a FAILED one back to PENDING.

use std::{fmt, str::FromStr};

/// Where a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkflowState {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
    /// Waiting for an approval or a timer: no worker and no lease hold it.
    Waiting,
    /// Paused by request: nothing runs it until it is resumed.
    Paused,
}

/// A move the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal workflow transition {from} → {to}")]
pub struct IllegalTransition {
    pub from: WorkflowState,
    pub to: WorkflowState,
}

impl WorkflowState {
    pub const ALL: [WorkflowState; 7] =
        [Self::Pending, Self::Processing, Self::Completed, Self::Failed, Self::Cancelled, Self::Waiting, Self::Paused];

    /// Completed, failed and cancelled workflows: nothing runs them again
    /// (but RetryWorkflow may move a FAILED one back to PENDING).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Checks the move `self → to`.
    pub fn check_transition(self, to: WorkflowState) -> Result<(), IllegalTransition> {
        use WorkflowState::*;
        match (self, to) {
            (Pending, Processing | Failed | Cancelled | Paused)
            | (Processing, Completed | Failed | Cancelled | Waiting | Paused)
            | (Waiting, Processing | Pending | Failed | Cancelled | Paused)
            | (Paused, Pending | Cancelled)
            | (Failed, Pending) => Ok(()),
            _ => Err(IllegalTransition { from: self, to }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Waiting => "WAITING",
            Self::Paused => "PAUSED",
        }
    }
}

impl fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkflowState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| format!("unknown workflow state {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::WorkflowState::{self, *};

    #[test]
    fn only_the_documented_moves_are_legal() {
        let legal = [
            (Pending, Processing),
            (Pending, Failed),
            (Pending, Cancelled),
            (Processing, Completed),
            (Processing, Failed),
            (Processing, Cancelled),
            (Processing, Waiting),
            (Waiting, Processing),
            (Waiting, Pending),
            (Waiting, Failed),
            (Waiting, Cancelled),
            (Pending, Paused),
            (Processing, Paused),
            (Waiting, Paused),
            (Paused, Pending),
            (Paused, Cancelled),
            (Failed, Pending),
        ];
        for from in WorkflowState::ALL {
            for to in WorkflowState::ALL {
                let allowed = legal.contains(&(from, to));
                assert_eq!(from.check_transition(to).is_ok(), allowed, "{from} → {to}");
            }
        }
    }

    #[test]
    fn terminal_states_are_final_and_names_round_trip() {
        for state in WorkflowState::ALL {
            assert_eq!(state.is_terminal(), matches!(state, Completed | Failed | Cancelled));
            assert_eq!(state.as_str().parse::<WorkflowState>().unwrap(), state);
        }
        assert!("DONE".parse::<WorkflowState>().is_err());
    }
}
