//! The one clock of the domain.

use chrono::{DateTime, SubsecRound, Utc};

/// Now, to the microsecond both databases keep.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
