//! The domain core of OmniNode Bridge: the rules every service shares, in
//! plain Rust (no transport, storage or broker types).
//!
//! - [`namespace`]: which namespaces exist and the default one;
//! - [`hash`] and [`validate`]: normalisation, BLAKE3, and checking stamped content;
//! - [`stamp`]: the two ONEX stamp formats;
//! - [`limits`]: what a request may carry;
//! - [`content_type`]: content types from file names;
//! - [`workflow_state`]: the workflow state machine;
//! - [`time`]: the one clock, at the precision both databases keep.

pub mod content_type;
pub mod hash;
pub mod limits;
pub mod namespace;
pub mod stamp;
pub mod time;
pub mod validate;
pub mod workflow_state;

pub use stamp::StampFormat;
pub use workflow_state::{IllegalTransition, WorkflowState};
