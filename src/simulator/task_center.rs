//! The simulator's SDRS task centre (placeholder until the next commit).

pub(super) fn routes() -> axum::Router<super::Simulator> {
    axum::Router::new()
}

/// The query of one authenticated failure-job request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailureJobsQuery {
    /// `limit`.
    pub limit: Option<String>,
    /// `offset`.
    pub offset: Option<String>,
}

#[derive(Default)]
pub(super) struct TaskCenterState {
    pub(super) queries: Vec<FailureJobsQuery>,
}
