//! IAM, as AWS evaluates a function's calls. Each emulated Lambda process
//! signs with an access key of its own ([`crate::runtime`]); the front
//! (DynamoDB, SQS, Secrets Manager) and the WebSocket API's `@connections`
//! ask here whether the function's role allows each call, and answer
//! `AccessDeniedException` when it does not, as AWS would on the first real
//! deploy. The event sources' polling and the function's logs are checked
//! once, at start-up, as Lambda checks them when it creates an event source
//! mapping.
//!
//! Modelled: `Allow` and `Deny` statements with `Action` and `Resource`
//! (`*` and `?` wildcards), and conditions on `dynamodb:LeadingKeys` with
//! `ForAllValues:StringLike` or `ForAllValues:StringEquals`; an explicit
//! deny wins, and what no statement allows is denied
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html>).
//! A key, operator or managed policy outside that stops the emulator with
//! its name: nothing is silently allowed.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::{Map, Value};

use crate::template::{str_of, Attrs, Template, ACCOUNT};

/// What one function's role allows.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `arn:aws:sts::…:assumed-role/<role>/<function>`, as AWS names the caller.
    caller: String,
    statements: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

/// `ForAllValues:StringLike` (`like`) or `ForAllValues:StringEquals` on `dynamodb:LeadingKeys`.
#[derive(Debug, Clone)]
struct Condition {
    like: bool,
    values: Vec<String>,
}

/// One authorisation AWS makes for a call: a `TransactWriteItems` of three
/// items is three (`dynamodb:PutItem`, …), each on its own partition key.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub action: String,
    pub resource: String,
    /// `dynamodb:LeadingKeys`: the partition keys a DynamoDB call names.
    pub leading_keys: Option<Vec<String>>,
}

impl Ask {
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Self { action: action.into(), resource: resource.into(), leading_keys: None }
    }
}

/// `*` any run, `?` any one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(str_of).collect(),
        Value::Null => vec![],
        v => vec![str_of(v)],
    }
}

impl Statement {
    fn parse(v: &Value, what: &str) -> Result<Self, String> {
        let m = v.as_object().ok_or_else(|| format!("{what}: a statement that is not a mapping"))?;
        for k in m.keys() {
            if !["Sid", "Effect", "Action", "Resource", "Condition"].contains(&k.as_str()) {
                return Err(format!("{what}: the statement key {k} is not modelled by hookcast emulate's IAM"));
            }
        }
        let allow = match m.get("Effect").map(str_of).as_deref() {
            Some("Allow") => true,
            Some("Deny") => false,
            other => return Err(format!("{what}: Effect {other:?} is neither Allow nor Deny")),
        };
        let mut conditions = vec![];
        for (op, keys) in m.get("Condition").and_then(Value::as_object).into_iter().flatten() {
            let like = match op.as_str() {
                "ForAllValues:StringLike" => true,
                "ForAllValues:StringEquals" => false,
                _ => return Err(format!("{what}: the condition operator {op} is not modelled (ForAllValues:StringLike and ForAllValues:StringEquals on dynamodb:LeadingKeys are)")),
            };
            for (key, values) in keys.as_object().into_iter().flatten() {
                if key != "dynamodb:LeadingKeys" {
                    return Err(format!("{what}: the condition key {key} is not modelled (dynamodb:LeadingKeys is)"));
                }
                conditions.push(Condition { like, values: strings(values) });
            }
        }
        Ok(Self { allow, actions: strings(&m["Action"]), resources: strings(&m["Resource"]), conditions })
    }

    fn applies(&self, ask: &Ask) -> bool {
        self.actions.iter().any(|a| glob(&a.to_ascii_lowercase(), &ask.action.to_ascii_lowercase()))
            && self.resources.iter().any(|r| glob(r, &ask.resource))
            && self.conditions.iter().all(|c| match &ask.leading_keys {
                // A ForAllValues operator over no values holds (the IAM
                // guide's warning about it): a call naming no partition key
                // passes the condition.
                None => true,
                Some(keys) => keys.iter().all(|k| c.values.iter().any(|v| if c.like { glob(v, k) } else { v == k })),
            })
    }
}

fn document(doc: &Value, what: &str) -> Result<Vec<Statement>, String> {
    match &doc["Statement"] {
        Value::Array(a) => a.iter().map(|s| Statement::parse(s, what)).collect(),
        Value::Null => Err(format!("{what}: a policy document without Statement")),
        s => Ok(vec![Statement::parse(s, what)?]),
    }
}

/// The AWS managed policies SAM attaches, as AWS publishes them.
fn managed(arn: &str, what: &str) -> Result<Vec<Statement>, String> {
    const LOGS: [&str; 3] = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"];
    let name = arn.rsplit('/').next().unwrap_or_default();
    let actions: Vec<&str> = match name {
        "AWSLambdaBasicExecutionRole" => LOGS.to_vec(),
        "AWSLambdaDynamoDBExecutionRole" => {
            [&["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"][..], &LOGS]
                .concat()
        }
        "AWSLambdaSQSQueueExecutionRole" => {
            [&["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"][..], &LOGS].concat()
        }
        _ => return Err(format!("{what}: the managed policy {arn} is not modelled by hookcast emulate")),
    };
    Ok(vec![Statement {
        allow: true,
        actions: actions.into_iter().map(str::to_owned).collect(),
        resources: vec!["*".into()],
        conditions: vec![],
    }])
}

/// A call a role does not allow, or a role this emulator cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    /// A call the role does not allow, worded as AWS words it.
    #[error("User: {caller} is not authorized to perform: {action} on resource: {resource} {why}")]
    Denied { caller: String, action: String, resource: String, why: &'static str },
    /// What Lambda itself does with a function's role (its logs, its event
    /// sources) is not allowed: `what` is the function or its event.
    #[error("{what}: the function's role does not allow what Lambda does with it: {denied}")]
    Lambda { what: String, denied: Box<IamError> },
    /// A role or policy that is not modelled, or that names what the
    /// template does not have.
    #[error("{0}")]
    Policy(String),
}

impl Policy {
    /// Every authorisation of a call, or the first refusal, worded as AWS words it.
    pub fn check(&self, asks: &[Ask]) -> Result<(), IamError> {
        for ask in asks {
            let applies: Vec<&Statement> = self.statements.iter().filter(|s| s.applies(ask)).collect();
            let why = if applies.iter().any(|s| !s.allow) {
                "with an explicit deny in an identity-based policy"
            } else if applies.is_empty() {
                "because no identity-based policy allows the action"
            } else {
                continue;
            };
            return Err(IamError::Denied {
                caller: self.caller.clone(),
                action: ask.action.clone(),
                resource: ask.resource.clone(),
                why,
            });
        }
        Ok(())
    }

    /// The role a SAM function runs with: its `Role` (a role of this
    /// template, with its inline policies and every `AWS::IAM::Policy`
    /// naming it), or the one SAM generates from `Policies` and its events.
    pub fn of_function(t: &Template, attrs: &Attrs, id: &str, props: &Map<String, Value>) -> Result<Self, IamError> {
        Self::role_of(t, attrs, id, props).map_err(IamError::Policy)
    }

    fn role_of(t: &Template, attrs: &Attrs, id: &str, props: &Map<String, Value>) -> Result<Self, String> {
        let what = format!("{id} (AWS::Serverless::Function)");
        let function = attrs.reference(id)?;
        let mut statements = vec![];
        let role = match props.get("Role") {
            Some(arn) => {
                if props.contains_key("Policies") {
                    return Err(format!("{what}: Policies beside Role (SAM ignores Policies when Role is set)"));
                }
                let arn = str_of(arn);
                let role_id = attrs
                    .owner_of("Arn", &arn)
                    .filter(|r| t.resources.get(r).is_some_and(|r| r.kind == "AWS::IAM::Role"))
                    .ok_or_else(|| {
                        format!("{what}: Role {arn} is not a role of this template (a role made elsewhere is not modelled)")
                    })?;
                let r = &t.resources[&role_id];
                let p = t.resolve(&Value::Object(r.properties.clone()), attrs)?;
                let rwhat = format!("{role_id} (AWS::IAM::Role)");
                let lambda_may_assume = p["AssumeRolePolicyDocument"]["Statement"].as_array().into_iter().flatten().any(|s| {
                    str_of(&s["Effect"]) == "Allow"
                        && strings(&s["Principal"]["Service"]).iter().any(|p| p == "lambda.amazonaws.com")
                        && strings(&s["Action"]).iter().any(|a| a == "sts:AssumeRole")
                });
                if !lambda_may_assume {
                    return Err(format!("{what}: the role defined for the function cannot be assumed by Lambda ({role_id}'s AssumeRolePolicyDocument)"));
                }
                for (i, pol) in p["Policies"].as_array().into_iter().flatten().enumerate() {
                    statements.extend(document(&pol["PolicyDocument"], &format!("{rwhat}.Policies[{i}]"))?);
                }
                for arn in strings(&p["ManagedPolicyArns"]) {
                    statements.extend(managed(&arn, &rwhat)?);
                }
                let name = attrs.reference(&role_id)?;
                for (pid, pr) in t.live().filter(|(_, r)| r.kind == "AWS::IAM::Policy") {
                    let pp = t.resolve(&Value::Object(pr.properties.clone()), attrs)?;
                    if strings(&pp["Roles"]).contains(&name) {
                        statements.extend(document(&pp["PolicyDocument"], &format!("{pid} (AWS::IAM::Policy)"))?);
                    }
                }
                name
            }
            None => {
                statements.extend(managed("AWSLambdaBasicExecutionRole", &what)?);
                for (i, pol) in props.get("Policies").map(strings_or_maps).unwrap_or_default().iter().enumerate() {
                    match pol {
                        Value::String(arn) => statements.extend(managed(arn, &what)?),
                        Value::Object(m) if m.contains_key("Statement") => {
                            statements.extend(document(pol, &format!("{what}.Policies[{i}]"))?)
                        }
                        other => return Err(format!("{what}.Policies[{i}]: {other} (a SAM policy template) is not modelled")),
                    }
                }
                for ev in props.get("Events").and_then(Value::as_object).into_iter().flatten().map(|(_, e)| e) {
                    match str_of(&ev["Type"]).as_str() {
                        "SQS" => statements.extend(managed("AWSLambdaSQSQueueExecutionRole", &what)?),
                        "DynamoDB" => statements.extend(managed("AWSLambdaDynamoDBExecutionRole", &what)?),
                        _ => {}
                    }
                }
                format!("{id}Role")
            }
        };
        Ok(Self { caller: format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{function}"), statements })
    }

    /// What Lambda itself does with the role: writes the function's logs
    /// (without the permission every line is dropped, silently; refused
    /// here), and polls each event source (refused at deploy by
    /// `CreateEventSourceMapping`).
    pub fn check_service(&self, what: &str, asks: &[Ask]) -> Result<(), IamError> {
        self.check(asks).map_err(|e| IamError::Lambda { what: what.to_owned(), denied: Box::new(e) })
    }
}

fn strings_or_maps(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        v => vec![v.clone()],
    }
}

/// What Lambda does with a function's role, by AWS's own lists: its logs
/// (CloudWatch Logs), its SQS and DynamoDB Streams event sources, and a
/// stream source's on-failure queue.
pub fn logs_asks(region: &str, function_name: &str) -> Vec<Ask> {
    let stream =
        format!("arn:aws:logs:{region}:{ACCOUNT}:log-group:/aws/lambda/{function_name}:log-stream:2026/01/01/[$LATEST]0");
    vec![Ask::new("logs:CreateLogStream", &stream), Ask::new("logs:PutLogEvents", &stream)]
}

/// "The provided execution role does not have permissions to call ReceiveMessage on SQS".
pub fn sqs_source_asks(queue_arn: &str) -> Vec<Ask> {
    ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"].iter().map(|a| Ask::new(*a, queue_arn)).collect()
}

/// "Please ensure the role can perform the GetRecords, GetShardIterator, DescribeStream, and ListStreams Actions".
pub fn stream_source_asks(stream_arn: &str) -> Vec<Ask> {
    ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]
        .iter()
        .map(|a| Ask::new(*a, stream_arn))
        .collect()
}

/// Each live process's role, by the access key it signs with.
static ROLES: LazyLock<Mutex<HashMap<String, Arc<Policy>>>> = LazyLock::new(Mutex::default);

pub fn register(access_key: &str, policy: Arc<Policy>) {
    ROLES.lock().unwrap().insert(access_key.to_owned(), policy);
}

pub fn forget(access_key: &str) {
    ROLES.lock().unwrap().remove(access_key);
}

/// Whether calls signed with `access_key` are a function's, under its role.
pub fn governs(access_key: Option<&str>) -> bool {
    access_key.is_some_and(|k| ROLES.lock().unwrap().contains_key(k))
}

/// The refusal of a call signed with `access_key`, if its role does not
/// allow it. A caller that is no function's process (the emulator itself,
/// a test) is not a role here and is allowed.
pub fn refusal(access_key: Option<&str>, asks: &[Ask]) -> Option<String> {
    let policy = ROLES.lock().unwrap().get(access_key?).cloned()?;
    let refused = policy.check(asks).err()?;
    tracing::warn!(refused = %refused, "IAM: a call refused");
    Some(refused.to_string())
}

/// The access key id a request was signed with (SigV4 `Credential=`).
pub fn access_key_of(headers: &axum::http::HeaderMap) -> Option<String> {
    let a = headers.get("authorization")?.to_str().ok()?;
    Some(a.split("Credential=").nth(1)?.split('/').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(statements: Value) -> Policy {
        Policy {
            caller: "arn:aws:sts::123456789012:assumed-role/r/f".into(),
            statements: document(&json!({ "Statement": statements }), "test").unwrap(),
        }
    }

    fn keys(action: &str, keys: &[&str]) -> Ask {
        Ask {
            action: action.into(),
            resource: "arn:aws:dynamodb:us-east-1:123456789012:table/t".into(),
            leading_keys: Some(keys.iter().map(|k| k.to_string()).collect()),
        }
    }

    #[test]
    fn globs_as_iam_does() {
        assert!(glob("conn#*", "conn#abc="));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
        assert!(glob("arn:aws:secretsmanager:r:1:secret:s-??????", "arn:aws:secretsmanager:r:1:secret:s-AbC123"));
        assert!(!glob("arn:aws:secretsmanager:r:1:secret:s-??????", "arn:aws:secretsmanager:r:1:secret:s-AbC1234"));
        assert!(!glob("conn#*", "subs#x"));
        assert!(glob("*#*#*", "a#b#c"));
    }

    #[test]
    fn leading_keys_hold_for_every_key_of_a_call() {
        let p = policy(json!([{
            "Effect": "Allow",
            "Action": ["dynamodb:PutItem", "dynamodb:Query"],
            "Resource": "arn:aws:dynamodb:us-east-1:123456789012:table/t",
            "Condition": { "ForAllValues:StringLike": { "dynamodb:LeadingKeys": ["conn#*", "ip#*"] } }
        }]));
        assert!(p.check(&[keys("dynamodb:PutItem", &["conn#1", "ip#1.2.3.4"])]).is_ok());
        let e = p.check(&[keys("dynamodb:PutItem", &["conn#1", "evs#orders"])]).unwrap_err().to_string();
        assert!(e.contains("is not authorized to perform: dynamodb:PutItem on resource: arn:aws:dynamodb:"), "{e}");
        // Another action, or another table: no statement allows it.
        assert!(p.check(&[keys("dynamodb:DeleteItem", &["conn#1"])]).is_err());
        let other =
            Ask { resource: "arn:aws:dynamodb:us-east-1:123456789012:table/u".into(), ..keys("dynamodb:PutItem", &["conn#1"]) };
        assert!(p.check(&[other]).is_err());
        // ForAllValues over no keys holds, as in IAM.
        assert!(p.check(&[Ask::new("dynamodb:Query", "arn:aws:dynamodb:us-east-1:123456789012:table/t")]).is_ok());
    }

    #[test]
    fn an_explicit_deny_wins_and_actions_ignore_case() {
        let p = policy(json!([
            { "Effect": "Allow", "Action": "sqs:*", "Resource": "*" },
            { "Effect": "Deny", "Action": "sqs:DeleteMessage", "Resource": "arn:aws:sqs:us-east-1:123456789012:q.fifo" }
        ]));
        assert!(p.check(&[Ask::new("SQS:SendMessage", "arn:aws:sqs:us-east-1:123456789012:q.fifo")]).is_ok());
        let e = p.check(&[Ask::new("sqs:DeleteMessage", "arn:aws:sqs:us-east-1:123456789012:q.fifo")]).unwrap_err().to_string();
        assert!(e.contains("explicit deny"), "{e}");
    }

    #[test]
    fn what_is_not_modelled_is_refused_by_name() {
        let bad = |s: Value| document(&json!({ "Statement": [s] }), "t").unwrap_err();
        assert!(bad(json!({"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"})).contains("NotAction"));
        assert!(bad(json!({"Effect": "Allow", "Action": "a:b", "Resource": "*", "Condition": {"StringLike": {"dynamodb:LeadingKeys": "x"}}}))
            .contains("StringLike"));
        assert!(bad(json!({"Effect": "Allow", "Action": "a:b", "Resource": "*", "Condition": {"ForAllValues:StringLike": {"aws:SourceIp": "x"}}}))
            .contains("aws:SourceIp"));
        assert!(managed("arn:aws:iam::aws:policy/AdministratorAccess", "t").is_err());
    }
}
