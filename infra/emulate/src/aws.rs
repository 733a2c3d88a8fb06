//! The AWS JSON protocol, spoken to moto's server: provisioning the
//! template's table, queues and secrets, and the calls the event-source
//! pollers make as Lambda's pollers do.

use serde_json::{json, Value};

#[derive(Clone)]
pub struct Aws {
    pub endpoint: String,
    pub region: String,
    http: reqwest::Client,
}

/// An AWS error: its type and message.
#[derive(Debug)]
pub struct AwsError {
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl Aws {
    pub fn new(endpoint: &str, region: &str) -> Self {
        Self { endpoint: endpoint.trim_end_matches('/').to_owned(), region: region.to_owned(), http: reqwest::Client::new() }
    }

    /// One call: `target` as `X-Amz-Target` (e.g. `DynamoDB_20120810.PutItem`).
    pub async fn call(&self, service: &str, target: &str, version: &str, body: Value) -> Result<Value, AwsError> {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=test/20261201/{}/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
            self.region
        );
        let res = self
            .http
            .post(&self.endpoint)
            .header("x-amz-target", target)
            .header("content-type", format!("application/x-amz-json-{version}"))
            .header("authorization", auth)
            .header("x-amz-date", "20261201T000000Z")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| AwsError { kind: "Unreachable".into(), message: format!("{}: {e}", self.endpoint) })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let kind = v["__type"].as_str().unwrap_or("Error").rsplit('#').next().unwrap_or("").to_owned();
        let message = v["message"].as_str().or(v["Message"].as_str()).unwrap_or(&text).to_owned();
        Err(AwsError { kind, message })
    }

    pub async fn dynamodb(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        self.call("dynamodb", &format!("DynamoDB_20120810.{op}"), "1.0", body).await
    }
    pub async fn streams(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        self.call("dynamodb", &format!("DynamoDBStreams_20120810.{op}"), "1.0", body).await
    }
    pub async fn sqs(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        self.call("sqs", &format!("AmazonSQS.{op}"), "1.0", body).await
    }
    pub async fn secrets(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        self.call("secretsmanager", &format!("secretsmanager.{op}"), "1.1", body).await
    }

    pub fn queue_arn(&self, name: &str) -> String {
        format!("arn:aws:sqs:{}:{}:{name}", self.region, crate::template::ACCOUNT)
    }

    /// Creates a queue; returns its URL.
    pub async fn create_queue(&self, name: &str, attributes: Value) -> Result<String, AwsError> {
        let v = self.sqs("CreateQueue", json!({"QueueName": name, "Attributes": attributes})).await?;
        Ok(v["QueueUrl"].as_str().unwrap_or_default().to_owned())
    }
}
