//! Fleet scenarios over simulated clusters: fanout, rollout, coldstart.
