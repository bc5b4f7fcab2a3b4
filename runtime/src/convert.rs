//! Conversions between the domain core's types and the contracts' messages
//! that more than one service needs: timestamps, stamp formats, workflow states.

use omninode_core::{StampFormat, WorkflowState};
use omninode_proto::{orchestrator::v1 as orchestrator, stamping::v1 as stamping};

/// A UTC time as a protobuf timestamp.
pub fn to_timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

/// The proto value of a stamp format.
pub fn stamp_format_to_proto(format: StampFormat) -> stamping::StampFormat {
    match format {
        StampFormat::Lightweight => stamping::StampFormat::Lightweight,
        StampFormat::Rich => stamping::StampFormat::Rich,
    }
}

/// The stamp format of a proto value: `Ok(None)` for unspecified, `Err` for
/// a number that is not a format.
pub fn stamp_format_from_proto(raw: i32) -> Result<Option<StampFormat>, String> {
    match stamping::StampFormat::try_from(raw) {
        Ok(stamping::StampFormat::Unspecified) => Ok(None),
        Ok(stamping::StampFormat::Lightweight) => Ok(Some(StampFormat::Lightweight)),
        Ok(stamping::StampFormat::Rich) => Ok(Some(StampFormat::Rich)),
        Err(_) => Err(format!("format {raw} is not a stamp format")),
    }
}

/// The proto value of a workflow state.
pub fn workflow_state_to_proto(state: WorkflowState) -> orchestrator::WorkflowState {
    match state {
        WorkflowState::Pending => orchestrator::WorkflowState::Pending,
        WorkflowState::Processing => orchestrator::WorkflowState::Processing,
        WorkflowState::Completed => orchestrator::WorkflowState::Completed,
        WorkflowState::Failed => orchestrator::WorkflowState::Failed,
        WorkflowState::Cancelled => orchestrator::WorkflowState::Cancelled,
        WorkflowState::Waiting => orchestrator::WorkflowState::Waiting,
        WorkflowState::Paused => orchestrator::WorkflowState::Paused,
    }
}

/// The workflow state of a proto value: `Ok(None)` for unspecified, `Err`
/// for a number that is not a state.
pub fn workflow_state_from_proto(raw: i32) -> Result<Option<WorkflowState>, String> {
    let state =
        orchestrator::WorkflowState::try_from(raw).map_err(|_| format!("state {raw} is not a workflow state"))?;
    Ok(match state {
        orchestrator::WorkflowState::Unspecified => None,
        orchestrator::WorkflowState::Pending => Some(WorkflowState::Pending),
        orchestrator::WorkflowState::Processing => Some(WorkflowState::Processing),
        orchestrator::WorkflowState::Completed => Some(WorkflowState::Completed),
        orchestrator::WorkflowState::Failed => Some(WorkflowState::Failed),
        orchestrator::WorkflowState::Cancelled => Some(WorkflowState::Cancelled),
        orchestrator::WorkflowState::Waiting => Some(WorkflowState::Waiting),
        orchestrator::WorkflowState::Paused => Some(WorkflowState::Paused),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_formats_round_trip() {
        for state in WorkflowState::ALL {
            assert_eq!(workflow_state_from_proto(workflow_state_to_proto(state) as i32), Ok(Some(state)));
        }
        for format in [StampFormat::Lightweight, StampFormat::Rich] {
            assert_eq!(stamp_format_from_proto(stamp_format_to_proto(format) as i32), Ok(Some(format)));
        }
        assert_eq!(workflow_state_from_proto(0), Ok(None));
        assert!(workflow_state_from_proto(99).unwrap_err().contains("99"));
        assert!(stamp_format_from_proto(-1).is_err());
    }

    #[test]
    fn timestamps_keep_microseconds() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        let ts = to_timestamp(at);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_000));
    }
}
