//! Evaluates the `prometheus` gates rollouts wait on, outside the planner's pure pass: every
//! few observe intervals, each gate a waiting stage has is queried and its verdict published
//! for the next pass (which it wakes when a verdict changed).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::state::{Shared, lock};
use crate::gitops::rollout::State;
use crate::gitops::stages::{External, Gate};

/// Instance key → (stage, gate index) → verdict.
pub(super) type Verdicts = BTreeMap<String, BTreeMap<(String, usize), External>>;

pub(super) async fn gate_evaluator(
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Rebuilt when a kudo.yaml reload changes `prometheus:`.
    let mut built: Option<crate::gitops::config::PrometheusConfig> = None;
    let mut client = None;
    let every = shared.options.observe_interval * 5;
    loop {
        let config = shared.config();
        if client.is_none() || built != config.prometheus {
            built = config.prometheus.clone();
            client = Some(built.as_ref().map(crate::gitops::gates::client));
        }
        let client = client.as_ref().and_then(Option::as_ref);
        let waiting: Vec<(String, String)> = lock(&shared.rollouts)
            .iter()
            .filter_map(|(key, state)| match state {
                State::Waiting { stage, gate, .. } if gate == "prometheus" => {
                    Some((key.clone(), stage.clone()))
                }
                _ => None,
            })
            .collect();
        let desired = shared
            .desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut verdicts = Verdicts::new();
        for (key, stage) in waiting {
            let Some(st) = desired
                .as_ref()
                .and_then(|d| d.instances.get(&key))
                .and_then(|i| i.rollout.stages.iter().find(|s| s.name == stage))
            else {
                continue;
            };
            for (i, gate) in st.gates.iter().enumerate() {
                let Gate::Prometheus { query, .. } = gate else {
                    continue;
                };
                let verdict = match (&config.prometheus, client) {
                    (Some(config), Some(Ok(client))) => {
                        crate::gitops::gates::evaluate(client, config, query).await
                    }
                    (_, Some(Err(e))) => External::Closed(e.clone()),
                    _ => External::Closed(
                        "kudo.yaml names no prometheus (prometheus: {url: ...})".into(),
                    ),
                };
                verdicts
                    .entry(key.clone())
                    .or_default()
                    .insert((stage.clone(), i), verdict);
            }
        }
        let changed = {
            let mut current = lock(&shared.gate_verdicts);
            let changed = *current != verdicts;
            *current = verdicts;
            changed
        };
        if changed {
            shared.request_plan();
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
