//! The render budget: what one template execution may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderBudget {
    pub max_time: std::time::Duration,
}
impl Default for RenderBudget {
    fn default() -> Self {
        RenderBudget { max_time: std::time::Duration::from_secs(10) }
    }
}
