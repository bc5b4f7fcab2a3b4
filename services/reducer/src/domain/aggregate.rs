//! Per-namespace aggregates and the items that feed them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use omninode_core::WorkflowState;

/// What one event contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    /// A stamp record was created.
    Stamp { file_size: u64, content_type: String },
    /// A workflow reached `state` (from `from`, unless it is new).
    Workflow { workflow_id: String, state: WorkflowState, from: Option<WorkflowState> },
}

/// One event to aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Deduplication key: an event id is counted once, ever.
    pub event_id: String,
    pub namespace: String,
    pub kind: ItemKind,
}

/// The aggregates of one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub namespace: String,
    pub total_stamps: u64,
    pub total_size_bytes: u64,
    pub file_type_counts: BTreeMap<String, u64>,
    pub unique_workflows: u64,
    /// Workflows per terminal state, keyed by [`WorkflowState::as_str`].
    pub workflow_state_counts: BTreeMap<String, u64>,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    /// Items per second over the last window.
    pub items_per_second: f64,
    pub last_aggregation_at: DateTime<Utc>,
    /// Incremented by every stored update.
    pub version: i64,
}

impl Aggregate {
    pub fn empty(namespace: &str, now: DateTime<Utc>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            total_stamps: 0,
            total_size_bytes: 0,
            file_type_counts: BTreeMap::new(),
            unique_workflows: 0,
            workflow_state_counts: BTreeMap::new(),
            window_start: None,
            window_end: None,
            items_per_second: 0.0,
            last_aggregation_at: now,
            version: 0,
        }
    }

    /// Adds one fresh (never counted) item; `new_workflow` says whether its
    /// workflow id is seen for the first time in this namespace.
    pub fn add(&mut self, kind: &ItemKind, new_workflow: bool) {
        match kind {
            ItemKind::Stamp { file_size, content_type } => {
                self.total_stamps += 1;
                self.total_size_bytes += file_size;
                *self.file_type_counts.entry(content_type.clone()).or_default() += 1;
            }
            ItemKind::Workflow { state, from, .. } => {
                if new_workflow {
                    self.unique_workflows += 1;
                }
                // Retried: it left its terminal state (FAILED) and no longer counts there.
                if let Some(from) = from.filter(|from| from.is_terminal() && !state.is_terminal()) {
                    let key = from.as_str();
                    if let Some(count) = self.workflow_state_counts.get_mut(key) {
                        *count = count.saturating_sub(1);
                        if *count == 0 {
                            self.workflow_state_counts.remove(key);
                        }
                    }
                }
                if state.is_terminal() {
                    *self.workflow_state_counts.entry(state.as_str().to_owned()).or_default() += 1;
                }
            }
        }
    }

    /// Records the window a batch of `items` covered.
    pub fn close_window(&mut self, start: DateTime<Utc>, end: DateTime<Utc>, items: usize) {
        let seconds = ((end - start).num_microseconds().unwrap_or(0) as f64 / 1e6).max(1e-3);
        self.window_start = Some(start);
        self.window_end = Some(end);
        self.items_per_second = items as f64 / seconds;
        self.last_aggregation_at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_workflows_add_up() {
        let mut agg = Aggregate::empty("ns", Utc::now());
        let stamp = |size, ct: &str| ItemKind::Stamp { file_size: size, content_type: ct.into() };
        agg.add(&stamp(10, "text/plain"), false);
        agg.add(&stamp(5, "text/plain"), false);
        agg.add(&stamp(7, "text/x-python"), false);
        let wf = |state, from| ItemKind::Workflow { workflow_id: "w".into(), state, from };
        agg.add(&wf(WorkflowState::Pending, None), true);
        agg.add(&wf(WorkflowState::Processing, Some(WorkflowState::Pending)), false);
        agg.add(&wf(WorkflowState::Failed, Some(WorkflowState::Processing)), false);
        assert_eq!(agg.workflow_state_counts.get("FAILED"), Some(&1));
        // RetryWorkflow: FAILED → PENDING → … → COMPLETED counts once, as COMPLETED.
        agg.add(&wf(WorkflowState::Pending, Some(WorkflowState::Failed)), false);
        agg.add(&wf(WorkflowState::Processing, Some(WorkflowState::Pending)), false);
        agg.add(&wf(WorkflowState::Completed, Some(WorkflowState::Processing)), false);
        assert!(!agg.workflow_state_counts.contains_key("FAILED"), "{:?}", agg.workflow_state_counts);
        assert_eq!((agg.total_stamps, agg.total_size_bytes), (3, 22));
        assert_eq!(agg.file_type_counts["text/plain"], 2);
        assert_eq!(agg.unique_workflows, 1);
        assert_eq!(agg.workflow_state_counts.get("COMPLETED"), Some(&1));
        assert!(!agg.workflow_state_counts.contains_key("PENDING"));
    }

    #[test]
    fn window_rate_is_items_over_its_duration() {
        let mut agg = Aggregate::empty("ns", Utc::now());
        let start = Utc::now();
        agg.close_window(start, start + chrono::Duration::milliseconds(500), 100);
        assert!((agg.items_per_second - 200.0).abs() < 1e-6);
    }
}
