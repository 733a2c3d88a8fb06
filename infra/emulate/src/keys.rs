//! Every template key `hookcast emulate` knows, in one table: what it
//! models (the key changes what the stack does here, as on AWS) and what has
//! no effect on a running stack (deployment settings, permissions,
//! encryption at rest, tags, backups), which is named at start-up. Any
//! other key stops the emulator with its name: nothing is silently ignored.

use serde_json::{Map, Value};

use crate::template::Template;

/// Why a key changes nothing here.
#[derive(Clone, Copy)]
pub enum Key {
    Modelled,
    /// Accepted, named at start-up with this reason.
    Inert(&'static str),
}

use Key::{Inert, Modelled};

const AT_REST: &str = "encryption at rest";
const TAGS: &str = "tags";
const DESCRIPTION: &str = "a description";
const BACKUP: &str = "backups and deletion protection";
const BUILD: &str = "sam build's output in --build-dir is what runs";

/// Resource attributes (beside `Type` and `Properties`).
pub const RESOURCE_ATTRIBUTES: &[(&str, Key)] = &[
    ("Condition", Modelled),
    ("Metadata", Inert("metadata (read by sam build)")),
    ("DependsOn", Inert("deployment order")),
    ("DeletionPolicy", Inert("what a stack deletion keeps")),
    ("UpdateReplacePolicy", Inert("what a stack update keeps")),
];

/// The properties of each resource type the emulator runs.
pub fn properties(kind: &str) -> Option<&'static [(&'static str, Key)]> {
    Some(match kind {
        "AWS::Serverless::Function" => &[
            ("Runtime", Modelled),
            ("Handler", Inert("provided runtimes run the bootstrap")),
            ("Architectures", Modelled),
            ("MemorySize", Modelled),
            ("Timeout", Modelled),
            ("Environment", Modelled),
            ("CodeUri", Inert(BUILD)),
            ("Description", Inert(DESCRIPTION)),
            ("Policies", Modelled),
            ("Role", Modelled),
            ("Events", Modelled),
            ("ReservedConcurrentExecutions", Modelled),
            ("Layers", Modelled),
            ("Tags", Inert(TAGS)),
        ],
        "AWS::Serverless::LayerVersion" => &[
            ("ContentUri", Modelled),
            ("CompatibleRuntimes", Modelled),
            ("CompatibleArchitectures", Modelled),
            ("Description", Inert(DESCRIPTION)),
            ("LayerName", Inert("the layer's name")),
            ("LicenseInfo", Inert("the layer's licence")),
            ("RetentionPolicy", Inert("what a stack deletion keeps")),
        ],
        "AWS::Serverless::HttpApi" => &[
            ("DefaultRouteSettings", Modelled),
            ("RouteSettings", Modelled),
            ("AccessLogSettings", Modelled),
            ("Description", Inert(DESCRIPTION)),
        ],
        "AWS::DynamoDB::Table" => &[
            ("TableName", Modelled),
            ("BillingMode", Modelled),
            ("AttributeDefinitions", Modelled),
            ("KeySchema", Modelled),
            ("TimeToLiveSpecification", Modelled),
            ("StreamSpecification", Modelled),
            ("GlobalSecondaryIndexes", Modelled),
            ("LocalSecondaryIndexes", Modelled),
            ("PointInTimeRecoverySpecification", Inert(BACKUP)),
            ("DeletionProtectionEnabled", Inert(BACKUP)),
            ("SSESpecification", Inert(AT_REST)),
            ("Tags", Inert(TAGS)),
        ],
        "AWS::SQS::Queue" => &[
            ("QueueName", Modelled),
            ("FifoQueue", Modelled),
            ("VisibilityTimeout", Modelled),
            ("MessageRetentionPeriod", Modelled),
            ("RedrivePolicy", Modelled),
            ("ContentBasedDeduplication", Modelled),
            ("DelaySeconds", Modelled),
            ("ReceiveMessageWaitTimeSeconds", Modelled),
            ("MaximumMessageSize", Modelled),
            ("DeduplicationScope", Modelled),
            ("FifoThroughputLimit", Modelled),
            ("SqsManagedSseEnabled", Inert(AT_REST)),
            ("Tags", Inert(TAGS)),
        ],
        "AWS::SecretsManager::Secret" => &[
            ("Name", Modelled),
            ("SecretString", Modelled),
            ("Description", Inert(DESCRIPTION)),
            ("KmsKeyId", Inert(AT_REST)),
            ("Tags", Inert(TAGS)),
        ],
        "AWS::IAM::Role" => &[
            ("AssumeRolePolicyDocument", Modelled),
            ("Policies", Modelled),
            ("ManagedPolicyArns", Modelled),
            ("Description", Inert(DESCRIPTION)),
            ("Path", Inert("the role's path")),
            ("RoleName", Inert("the role's name")),
            ("MaxSessionDuration", Inert("sessions a person assumes")),
            ("Tags", Inert(TAGS)),
        ],
        "AWS::IAM::Policy" => &[("PolicyName", Inert("the policy's name")), ("PolicyDocument", Modelled), ("Roles", Modelled)],
        "AWS::ApiGatewayV2::Api" => &[
            ("Name", Inert("the API's name")),
            ("ProtocolType", Modelled),
            ("RouteSelectionExpression", Modelled),
            ("Description", Inert(DESCRIPTION)),
            ("Tags", Inert(TAGS)),
        ],
        "AWS::ApiGatewayV2::Integration" => &[
            ("ApiId", Modelled),
            ("IntegrationType", Modelled),
            ("IntegrationUri", Modelled),
            ("RequestTemplates", Modelled),
            ("TemplateSelectionExpression", Modelled),
            ("Description", Inert(DESCRIPTION)),
        ],
        "AWS::ApiGatewayV2::IntegrationResponse" => &[
            ("ApiId", Modelled),
            ("IntegrationId", Modelled),
            ("IntegrationResponseKey", Modelled),
            ("ResponseTemplates", Modelled),
            ("TemplateSelectionExpression", Modelled),
        ],
        "AWS::ApiGatewayV2::Route" => &[
            ("ApiId", Modelled),
            ("RouteKey", Modelled),
            ("Target", Modelled),
            ("AuthorizationType", Modelled),
            ("RouteResponseSelectionExpression", Modelled),
            ("OperationName", Inert("an operation name")),
        ],
        "AWS::ApiGatewayV2::RouteResponse" => &[("ApiId", Modelled), ("RouteId", Modelled), ("RouteResponseKey", Modelled)],
        "AWS::ApiGatewayV2::Stage" => &[
            ("ApiId", Modelled),
            ("StageName", Modelled),
            ("AutoDeploy", Inert("every route is deployed here")),
            ("DefaultRouteSettings", Modelled),
            ("RouteSettings", Modelled),
            ("AccessLogSettings", Modelled),
            ("Description", Inert(DESCRIPTION)),
        ],
        _ => return None,
    })
}

/// The properties of each event source type of a function.
pub fn event_properties(kind: &str) -> Option<&'static [(&'static str, Key)]> {
    Some(match kind {
        "HttpApi" => &[
            ("ApiId", Modelled),
            ("Path", Modelled),
            ("Method", Modelled),
            ("TimeoutInMillis", Modelled),
            ("PayloadFormatVersion", Modelled),
        ],
        "DynamoDB" => &[
            ("Stream", Modelled),
            ("StartingPosition", Modelled),
            ("BatchSize", Modelled),
            ("MaximumBatchingWindowInSeconds", Modelled),
            ("BisectBatchOnFunctionError", Modelled),
            ("MaximumRetryAttempts", Modelled),
            ("MaximumRecordAgeInSeconds", Modelled),
            ("DestinationConfig", Modelled),
            ("FilterCriteria", Modelled),
            ("FunctionResponseTypes", Modelled),
            ("ParallelizationFactor", Modelled),
            ("Enabled", Modelled),
        ],
        "SQS" => &[
            ("Queue", Modelled),
            ("BatchSize", Modelled),
            ("FunctionResponseTypes", Modelled),
            ("ScalingConfig", Modelled),
            ("MaximumBatchingWindowInSeconds", Modelled),
            ("Enabled", Modelled),
        ],
        _ => return None,
    })
}

/// A template key, or an event type, that is not modelled here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("{what}: {key} is not modelled by hookcast emulate")]
    Key { what: String, key: String },
    #[error("{what}: event type {kind} is not modelled (HttpApi, DynamoDB and SQS are)")]
    EventType { what: String, kind: String },
}

fn check(what: &str, m: &Map<String, Value>, table: &[(&str, Key)], notes: &mut Vec<String>) -> Result<(), AuditError> {
    for k in m.keys() {
        match table.iter().find(|(name, _)| *name == k) {
            Some((_, Modelled)) => {}
            Some((_, Inert(why))) => notes.push(format!("{what}.{k} ({why})")),
            None => return Err(AuditError::Key { what: what.to_owned(), key: k.clone() }),
        }
    }
    Ok(())
}

/// Checks every live resource against the table: `Err` names the first key
/// that is not modelled; `Ok` lists those that change nothing here, and the
/// resources that are not run at all.
pub fn audit(t: &Template) -> Result<Vec<String>, AuditError> {
    let mut notes = vec![];
    for (id, attrs) in &t.raw_resources {
        let Some(attrs) = attrs.as_object() else { continue };
        let rest: Map<String, Value> = attrs
            .iter()
            .filter(|(k, _)| !["Type", "Properties"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        check(id, &rest, RESOURCE_ATTRIBUTES, &mut notes)?;
    }
    for (id, r) in t.live() {
        let Some(table) = properties(&r.kind) else {
            notes.push(format!("{id} ({}: not run here)", r.kind));
            continue;
        };
        let mut props = r.properties.clone();
        if r.kind == "AWS::Serverless::Function" {
            for (k, v) in &t.globals_function {
                props.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        check(id, &props, table, &mut notes)?;
        for (name, ev) in props.get("Events").and_then(Value::as_object).into_iter().flatten() {
            let kind = ev.get("Type").and_then(Value::as_str).unwrap_or_default();
            let table = event_properties(kind)
                .ok_or_else(|| AuditError::EventType { what: format!("{id}.Events.{name}"), kind: kind.to_owned() })?;
            let ep = ev.get("Properties").and_then(Value::as_object).cloned().unwrap_or_default();
            check(&format!("{id}.Events.{name}"), &ep, table, &mut notes)?;
        }
    }
    notes.sort();
    notes.dedup();
    Ok(notes)
}

/// Refuses, by name, a key of `m` that is not in `known`.
pub(crate) fn only_keys(what: &str, m: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    for k in m.keys() {
        if !known.contains(&k.as_str()) {
            return Err(format!("{what}: property {k} is not modelled by hookcast emulate"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_named_and_an_inert_one_noted() {
        let text = r#"
Resources:
  Q:
    Type: AWS::SQS::Queue
    DependsOn: [T]
    Properties: { FifoQueue: true, Tags: [] }
  T:
    Type: AWS::DynamoDB::Table
    Properties: { BillingMode: PAY_PER_REQUEST, TableClass: STANDARD_INFREQUENT_ACCESS }
"#;
        let t = Template::parse(text, &Default::default(), "us-east-1", "s").unwrap();
        let e = audit(&t).unwrap_err().to_string();
        assert_eq!(e, "T: TableClass is not modelled by hookcast emulate");
        let ok = text.replace(", TableClass: STANDARD_INFREQUENT_ACCESS", "");
        let t = Template::parse(&ok, &Default::default(), "us-east-1", "s").unwrap();
        let notes = audit(&t).unwrap();
        assert!(notes.contains(&"Q.Tags (tags)".to_owned()), "{notes:?}");
        assert!(notes.contains(&"Q.DependsOn (deployment order)".to_owned()), "{notes:?}");
    }
}
