//! `prometheus` rollout gates: one instant query against the Prometheus named in kudo.yaml.
//! The gate opens when the result is a non-empty vector whose samples are all non-zero, or a
//! non-zero scalar; anything else (an empty vector, a zero sample, a bad query, an
//! unreachable server) keeps it closed, and the reason says which.

use std::time::Duration;

use serde_json::Value;

use super::config::PrometheusConfig;
use super::stages::External;

/// How long one query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The verdict of one `/api/v1/query` answer (the JSON body, whatever its status).
pub fn verdict(query: &str, body: &Value) -> External {
    if body.get("status").and_then(Value::as_str) != Some("success") {
        let kind = body
            .get("errorType")
            .and_then(Value::as_str)
            .unwrap_or("error");
        let error = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error text");
        return External::Closed(format!("query {query:?} failed ({kind}): {error}"));
    }
    let data = body.get("data").unwrap_or(&Value::Null);
    let result = data.get("result").unwrap_or(&Value::Null);
    let value_of = |sample: &Value| -> Option<f64> {
        sample
            .get(1)
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<f64>().ok())
    };
    match data.get("resultType").and_then(Value::as_str) {
        Some("vector") => {
            let samples = result.as_array().map(Vec::as_slice).unwrap_or_default();
            if samples.is_empty() {
                return External::Closed(format!("query {query:?} returned no samples"));
            }
            for s in samples {
                let v = s.get("value").and_then(value_of);
                if v.is_none_or(|v| v == 0.0 || v.is_nan()) {
                    let labels = s.get("metric").map(Value::to_string).unwrap_or_default();
                    return External::Closed(format!(
                        "query {query:?}: sample {labels} is {}",
                        v.map_or("not a number".to_string(), |v| v.to_string())
                    ));
                }
            }
            External::Open
        }
        Some("scalar") => match value_of(result) {
            Some(v) if v != 0.0 && !v.is_nan() => External::Open,
            v => External::Closed(format!(
                "query {query:?}: scalar is {}",
                v.map_or("not a number".to_string(), |v| v.to_string())
            )),
        },
        other => External::Closed(format!(
            "query {query:?} returned a {}; a gate needs a vector or a scalar",
            other.unwrap_or("nothing")
        )),
    }
}

/// A client for `config` (its CA added to the system roots).
pub fn client(config: &PrometheusConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(QUERY_TIMEOUT);
    if let Some(ca) = &config.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("prometheus.caFile {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("prometheus.caFile {}: {e}", ca.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("prometheus client: {e}"))
}

/// Runs `query` now; never fails, the verdict carries the reason.
pub async fn evaluate(
    client: &reqwest::Client,
    config: &PrometheusConfig,
    query: &str,
) -> External {
    let url = format!("{}/api/v1/query", config.url.trim_end_matches('/'));
    let mut request = client.get(&url).query(&[("query", query)]);
    if let Some(file) = &config.bearer_token_file {
        match std::fs::read_to_string(file) {
            Ok(token) => request = request.bearer_auth(token.trim()),
            Err(e) => {
                return External::Closed(format!(
                    "prometheus.bearerTokenFile {}: {e}",
                    file.display()
                ));
            }
        }
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return External::Closed(format!("prometheus at {url} unreachable: {e}")),
    };
    let status = response.status();
    match response.json::<Value>().await {
        Ok(body) => verdict(query, &body),
        Err(e) => External::Closed(format!(
            "prometheus at {url} answered HTTP {status} without a query result: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vector(values: &[&str]) -> Value {
        json!({"status": "success", "data": {"resultType": "vector", "result":
            values.iter().enumerate().map(|(i, v)| json!({"metric": {"i": i.to_string()}, "value": [1.0, v]})).collect::<Vec<_>>()}})
    }

    #[test]
    fn a_vector_opens_only_when_non_empty_and_all_non_zero() {
        assert_eq!(verdict("q", &vector(&["1", "2.5"])), External::Open);
        assert_eq!(
            verdict("q", &vector(&[])),
            External::Closed("query \"q\" returned no samples".into())
        );
        assert_eq!(
            verdict("q", &vector(&["1", "0"])),
            External::Closed("query \"q\": sample {\"i\":\"1\"} is 0".into())
        );
        assert!(matches!(
            verdict("q", &vector(&["NaN"])),
            External::Closed(_)
        ));
    }

    #[test]
    fn a_scalar_opens_when_non_zero() {
        let scalar = |v: &str| json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, v]}});
        assert_eq!(verdict("q", &scalar("1")), External::Open);
        assert_eq!(
            verdict("q", &scalar("0")),
            External::Closed("query \"q\": scalar is 0".into())
        );
    }

    #[test]
    fn errors_and_other_result_types_keep_the_gate_closed_with_the_reason() {
        let bad =
            json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 4"});
        assert_eq!(
            verdict("up ==", &bad),
            External::Closed("query \"up ==\" failed (bad_data): parse error at char 4".into())
        );
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(
            matches!(verdict("q[5m]", &matrix), External::Closed(r) if r.contains("returned a matrix"))
        );
    }
}
