//! The leader's Prometheus client for canary analysis: runs a round's instant queries
//! (`GET /api/v1/query`) and turns the answers into the samples the engine commits.
//!
//! Every failure of a query (Prometheus unreachable, a timeout, a status other than
//! 200, an error answer such as a bad query, an answer that does not parse) becomes the
//! sample's `error`, said in one line, never a missing value: the engine counts query
//! errors apart from data, and too many make the analysis inconclusive. A vector or a
//! scalar answer gives one value per series; NaN and infinite values (a ratio over no
//! requests) are dropped, so a series with no traffic counts as no data.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::{MetricQuery, Sample, SampleRequest};

/// Where Prometheus is and how to reach it.
#[derive(Debug, Clone)]
pub struct PrometheusSettings {
    /// Its base URL (`http://prometheus:9090`, a path prefix allowed).
    pub url: String,
    /// A CA (PEM) to trust for an `https` URL, besides the system's roots.
    pub ca: Option<PathBuf>,
    /// The limit of one query.
    pub timeout: Duration,
}

/// A client for one Prometheus server; `None` settings: every query fails saying that
/// no Prometheus is configured on this coordinator.
#[derive(Debug, Clone)]
pub struct Prometheus {
    client: Option<(reqwest::Client, String)>,
    node: u64,
}

impl Prometheus {
    /// A client for `settings` (none: not configured), used by coordinator `node`.
    pub fn new(settings: Option<&PrometheusSettings>, node: u64) -> Result<Self, String> {
        let Some(settings) = settings else { return Ok(Self { client: None, node }) };
        let mut builder = reqwest::Client::builder().timeout(settings.timeout).connect_timeout(settings.timeout);
        if let Some(ca) = &settings.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("prometheus_ca {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("prometheus_ca {}: not a PEM certificate: {e}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| format!("the Prometheus client: {e}"))?;
        Ok(Self { client: Some((client, settings.url.trim_end_matches('/').to_owned())), node })
    }

    /// Runs every query of a round (each metric's two sides at once), evaluated at
    /// `at_unix_ms`.
    pub async fn sample(&self, request: &SampleRequest, at_unix_ms: i64) -> Vec<Sample> {
        let queries = request.queries.iter().map(|q| self.metric(q, at_unix_ms));
        futures::future::join_all(queries).await
    }

    async fn metric(&self, q: &MetricQuery, at_unix_ms: i64) -> Sample {
        let canary = self.query(&q.canary, at_unix_ms);
        let baseline = async {
            match &q.baseline {
                Some(b) => self.query(b, at_unix_ms).await,
                None => Ok(Vec::new()),
            }
        };
        let (canary, baseline) = tokio::join!(canary, baseline);
        match (canary, baseline) {
            (Ok(canary), Ok(baseline)) => Sample { metric: q.metric.clone(), canary, baseline, error: None },
            (Err(e), _) => failed(&q.metric, format!("canary query: {e}")),
            (_, Err(e)) => failed(&q.metric, format!("baseline query: {e}")),
        }
    }

    /// One instant query: the value of every series it returns.
    async fn query(&self, promql: &str, at_unix_ms: i64) -> Result<Vec<f64>, String> {
        let Some((client, base)) = &self.client else {
            return Err(format!("no Prometheus is configured on coordinator {} (prometheus_url)", self.node));
        };
        let time = format!("{}.{:03}", at_unix_ms.div_euclid(1000), at_unix_ms.rem_euclid(1000));
        let url = format!("{base}/api/v1/query");
        let response = client
            .get(&url)
            .query(&[("query", promql), ("time", time.as_str())])
            .send()
            .await
            .map_err(|e| format!("{url}: {}", describe(&e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("{url}: reading the answer: {}", describe(&e)))?;
        parse_answer(status.as_u16(), &body).map_err(|e| format!("{url}: {e}"))
    }
}

fn failed(metric: &str, error: String) -> Sample {
    Sample { metric: metric.to_owned(), canary: Vec::new(), baseline: Vec::new(), error: Some(error) }
}

/// A reqwest error in one line, with its cause (`connect: Connection refused`, `timed
/// out`).
fn describe(e: &reqwest::Error) -> String {
    flotilla_net::errors::describe_request(e, e.is_timeout(), e.is_connect())
}

/// The body of `/api/v1/query`.
#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Series>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct Series {
    value: (f64, String),
}

/// The values of an answer: one per series of a vector, the scalar's own; NaN and
/// infinities dropped. A range vector or a string is an error (the query must give
/// instant values).
fn parse_answer(status: u16, body: &[u8]) -> Result<Vec<f64>, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("status {status}, not a Prometheus answer ({e}): {text}")
    })?;
    if answer.status != "success" {
        let kind = answer.error_type.unwrap_or_else(|| "error".to_owned());
        return Err(format!("status {status}, {kind}: {}", answer.error.unwrap_or_default()));
    }
    let parse = |v: &str| v.parse::<f64>().ok().filter(|v| v.is_finite());
    match answer.data {
        Some(Data::Vector(series)) => Ok(series.iter().filter_map(|s| parse(&s.value.1)).collect()),
        Some(Data::Scalar((_, v))) => Ok(parse(&v).into_iter().collect()),
        Some(Data::Matrix(_)) => Err("the query gives a range vector; give an instant vector or a scalar".to_owned()),
        Some(Data::String(_)) => Err("the query gives a string; give an instant vector or a scalar".to_owned()),
        None => Err("the answer has no data".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_give_their_finite_values_and_errors_say_what_went_wrong() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"host":"a"},"value":[1700000000.5,"0.05"]},
            {"metric":{"host":"b"},"value":[1700000000.5,"NaN"]},
            {"metric":{"host":"c"},"value":[1700000000.5,"+Inf"]},
            {"metric":{"host":"d"},"value":[1700000000.5,"2"]}]}}"#;
        assert_eq!(parse_answer(200, vector), Ok(vec![0.05, 2.0]));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(200, empty), Ok(vec![]));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3.5"]}}"#;
        assert_eq!(parse_answer(200, scalar), Ok(vec![3.5]));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        assert_eq!(parse_answer(400, bad), Err("status 400, bad_data: parse error at char 5".to_owned()));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_answer(200, matrix).unwrap_err().contains("range vector"));
        assert!(
            parse_answer(502, b"<html>bad gateway</html>")
                .unwrap_err()
                .starts_with("status 502, not a Prometheus answer")
        );
    }

    #[tokio::test]
    async fn without_prometheus_every_query_fails_saying_so() {
        let p = Prometheus::new(None, 3).unwrap();
        let request = SampleRequest {
            stage: 0,
            service: flotilla_shared::model::ServiceName::new("api".to_owned()),
            batch: 0,
            round: 0,
            queries: vec![MetricQuery { metric: "errors".into(), canary: "up".into(), baseline: Some("up".into()) }],
        };
        let samples = p.sample(&request, 1_700_000_000_000).await;
        assert_eq!(samples.len(), 1);
        assert_eq!(
            samples[0].error.as_deref(),
            Some("canary query: no Prometheus is configured on coordinator 3 (prometheus_url)")
        );
    }
}
