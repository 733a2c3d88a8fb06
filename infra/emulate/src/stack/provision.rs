//! Provisioning: moto (unless given one), the DynamoDB front, then every
//! resource's names and the queues, tables and secrets, in moto.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::args::EmulateArgs;
use crate::aws::Aws;
use crate::keys::only_keys;
use crate::template::{str_of, Attrs, Template, ACCOUNT, INERT};

pub(super) fn suffix() -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..12).map(|_| A[rand::random::<u32>() as usize % A.len()] as char).collect()
}

fn api_id() -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..10).map(|_| A[rand::random::<u32>() as usize % A.len()] as char).collect()
}

/// Brings up moto for a checkout where the test command has not run: a
/// `.tools/venv` with moto alone, at the version `tests/aws/requirements.txt`
/// pins (the test command later makes the venv again with everything).
async fn install_moto(project: &Path) -> Result<(), String> {
    let pin = std::fs::read_to_string(project.join("tests/aws/requirements.txt"))
        .ok()
        .and_then(|r| r.lines().find(|l| l.starts_with("moto")).map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "moto[server]".into());
    let venv = project.join(".tools/venv");
    let command = format!("python3 -m venv {v} && {v}/bin/pip install '{pin}'", v = venv.display());
    eprintln!("hookcast emulate: no moto in {}; installing it once: {command}", venv.display());
    let steps: [(&str, Vec<String>); 2] = [
        ("python3", vec!["-m".into(), "venv".into(), venv.display().to_string()]),
        (&format!("{}/bin/pip", venv.display()), vec!["install".into(), "-q".into(), "--disable-pip-version-check".into(), pin]),
    ];
    for (program, args) in steps {
        let ok = tokio::process::Command::new(program).args(&args).status().await.map(|s| s.success()).unwrap_or(false);
        if !ok {
            // Half made, it would be taken for installed next time.
            let _ = std::fs::remove_dir_all(&venv);
            return Err(format!(
                "no moto to start, and installing it failed; run `{command}` yourself, or pass --aws-endpoint URL"
            ));
        }
    }
    Ok(())
}

/// Starts moto's server from the project's venv (beside the template, or in
/// the working directory), installed there first if need be; its URL.
async fn start_moto(project: &Path) -> Result<(tokio::process::Child, String), String> {
    let here = std::env::current_dir().unwrap_or_default();
    let project = [project, here.as_path()]
        .into_iter()
        .find(|p| p.join(".tools/venv/bin/python").exists() && p.join("tests/aws/moto_server.py").exists())
        .unwrap_or(project);
    let python = project.join(".tools/venv/bin/python");
    let script = project.join("tests/aws/moto_server.py");
    if !script.exists() {
        return Err(format!(
            "no moto to start: {} is missing (run hookcast emulate in a hookcast checkout, or pass --aws-endpoint URL)",
            script.display()
        ));
    }
    if !python.exists() {
        install_moto(project).await?;
    }
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start moto: {e}"))?;
    let out = child.stdout.take().ok_or("moto has no stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(out));
    let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .map_err(|_| "moto did not start within 120 s".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("moto exited before it listened")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, first.trim().to_owned()))
}

/// Ids and names first: every Ref and ARN the rest resolves against; and
/// each queue's name.
fn name_resources(t: &Template, aws: &Aws, region: &str, stack: &str) -> Result<(Attrs, HashMap<String, String>), String> {
    let mut attrs = Attrs::default();
    let mut queue_names = HashMap::new();
    for (id, r) in t.live() {
        let name = format!("{stack}-{id}-{}", suffix());
        match r.kind.as_str() {
            "AWS::Serverless::Function" => {
                attrs.set_ref(id, &name);
                attrs.set_att(id, "Arn", format!("arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"));
            }
            // `Ref` of a layer version is its ARN, ending in its version.
            "AWS::Serverless::LayerVersion" => {
                attrs.set_ref(id, format!("arn:aws:lambda:{region}:{ACCOUNT}:layer:{name}:1"));
            }
            "AWS::ApiGatewayV2::Api" | "AWS::Serverless::HttpApi" => {
                attrs.set_ref(id, api_id());
            }
            "AWS::SQS::Queue" => {
                let fifo = r.properties.get("FifoQueue").is_some_and(|v| str_of(v) == "true");
                let name = match r.properties.get("QueueName") {
                    Some(n) => str_of(&t.resolve(n, &attrs)?),
                    None if fifo => format!("{name}.fifo"),
                    None => name,
                };
                attrs.set_att(id, "Arn", aws.queue_arn(&name));
                attrs.set_att(id, "QueueName", &name);
                queue_names.insert(id.clone(), name);
            }
            "AWS::ApiGatewayV2::Integration" | "AWS::ApiGatewayV2::Route" | "AWS::ApiGatewayV2::Stage" => {
                attrs.set_ref(id, format!("{}{}", &id[..id.len().min(3)].to_lowercase(), api_id()));
            }
            // As AWS names them: a policy's resources are matched against these.
            "AWS::IAM::Role" => {
                attrs.set_ref(id, &name);
                attrs.set_att(id, "Arn", format!("arn:aws:iam::{ACCOUNT}:role/{name}"));
            }
            "AWS::Logs::LogGroup" => {} // below: a name may name a function
            // Not run here (INERT): named, so outputs that name it resolve.
            "AWS::CloudFront::Distribution" => {
                attrs.set_ref(id, format!("E{}", suffix()));
                attrs.set_att(id, "DomainName", format!("d{}.cloudfront.net", suffix().to_lowercase()));
            }
            kind if INERT.contains(&kind) || kind.starts_with("AWS::ApiGatewayV2::") => {
                attrs.set_ref(id, &name);
                attrs.set_att(id, "Arn", format!("arn:aws:emulated:{region}:{ACCOUNT}:{id}/{name}"));
            }
            _ => {}
        }
    }
    for (id, r) in t.live().filter(|(_, r)| r.kind == "AWS::Logs::LogGroup") {
        let name = match r.properties.get("LogGroupName") {
            Some(n) => str_of(&t.resolve(n, &attrs)?),
            None => format!("{stack}-{id}-{}", suffix()),
        };
        attrs.set_att(id, "Arn", format!("arn:aws:logs:{region}:{ACCOUNT}:log-group:{name}:*"));
        attrs.set_ref(id, name);
    }
    Ok((attrs, queue_names))
}

/// Queues, dead-letter targets before the queues that name them: each
/// queue's URL and visibility timeout, by ARN.
async fn create_queues(
    t: &Template,
    attrs: &mut Attrs,
    aws: &Aws,
    queue_names: &HashMap<String, String>,
) -> Result<(HashMap<String, String>, HashMap<String, Duration>), String> {
    let mut queues: Vec<_> = t.live().filter(|(_, r)| r.kind == "AWS::SQS::Queue").collect();
    queues.sort_by_key(|(_, r)| r.properties.contains_key("RedrivePolicy"));
    let mut queue_urls = HashMap::new();
    let mut queue_visibility: HashMap<String, Duration> = HashMap::new();
    for (id, r) in queues {
        let props = t.resolve(&Value::Object(r.properties.clone()), attrs)?;
        let props = props.as_object().cloned().unwrap_or_default();
        only_keys(
            &format!("{id} (AWS::SQS::Queue)"),
            &props,
            &[
                "QueueName",
                "FifoQueue",
                "VisibilityTimeout",
                "MessageRetentionPeriod",
                "RedrivePolicy",
                "ContentBasedDeduplication",
                "DelaySeconds",
                "ReceiveMessageWaitTimeSeconds",
                "MaximumMessageSize",
                "DeduplicationScope",
                "FifoThroughputLimit",
                "SqsManagedSseEnabled",
                "Tags",
            ],
        )?;
        let mut a = Map::new();
        for (k, v) in &props {
            match k.as_str() {
                "QueueName" | "Tags" | "SqsManagedSseEnabled" => {}
                "RedrivePolicy" => {
                    a.insert(k.clone(), json!(if v.is_string() { str_of(v) } else { v.to_string() }));
                }
                _ => {
                    a.insert(k.clone(), json!(str_of(v)));
                }
            }
        }
        let url = aws.create_queue(&queue_names[id], Value::Object(a)).await.map_err(|e| format!("{id}: CreateQueue: {e}"))?;
        // SQS's default visibility timeout is 30 s.
        let visibility = props.get("VisibilityTimeout").map(str_of).and_then(|v| v.parse().ok()).unwrap_or(30);
        queue_visibility.insert(aws.queue_arn(&queue_names[id]), Duration::from_secs(visibility));
        attrs.set_ref(id, &url);
        queue_urls.insert(aws.queue_arn(&queue_names[id]), url);
    }
    Ok((queue_urls, queue_visibility))
}

/// Tables (on-demand only: the front models on-demand capacity).
async fn create_tables(t: &Template, attrs: &mut Attrs, aws: &Aws, stack: &str) -> Result<(), String> {
    for (id, r) in t.live().filter(|(_, r)| r.kind == "AWS::DynamoDB::Table") {
        let props = t.resolve(&Value::Object(r.properties.clone()), attrs)?;
        let props = props.as_object().cloned().unwrap_or_default();
        only_keys(
            &format!("{id} (AWS::DynamoDB::Table)"),
            &props,
            &[
                "TableName",
                "BillingMode",
                "AttributeDefinitions",
                "KeySchema",
                "TimeToLiveSpecification",
                "PointInTimeRecoverySpecification",
                "SSESpecification",
                "StreamSpecification",
                "GlobalSecondaryIndexes",
                "LocalSecondaryIndexes",
                "ProvisionedThroughput",
                "Tags",
                "DeletionProtectionEnabled",
            ],
        )?;
        // The front models on-demand capacity (crate::front): a provisioned table is not modelled.
        if props.get("BillingMode").map(str_of).as_deref() != Some("PAY_PER_REQUEST") {
            return Err(format!(
                "{id}: BillingMode {} is not modelled (PAY_PER_REQUEST is)",
                props.get("BillingMode").map(str_of).unwrap_or_else(|| "PROVISIONED (the default)".into())
            ));
        }
        let name = props.get("TableName").map(str_of).unwrap_or_else(|| format!("{stack}-{id}-{}", suffix()));
        let mut req = json!({
            "TableName": name,
            "AttributeDefinitions": props.get("AttributeDefinitions").cloned().unwrap_or(json!([])),
            "KeySchema": props.get("KeySchema").cloned().unwrap_or(json!([])),
            "BillingMode": props.get("BillingMode").cloned().unwrap_or(json!("PROVISIONED")),
        });
        for k in ["GlobalSecondaryIndexes", "LocalSecondaryIndexes", "ProvisionedThroughput"] {
            if let Some(v) = props.get(k) {
                req[k] = v.clone();
            }
        }
        if let Some(s) = props.get("StreamSpecification") {
            req["StreamSpecification"] = json!({"StreamEnabled": true, "StreamViewType": s["StreamViewType"]});
        }
        let out = aws.dynamodb("CreateTable", req).await.map_err(|e| format!("{id}: CreateTable: {e}"))?;
        let desc = &out["TableDescription"];
        attrs.set_ref(id, &name);
        attrs.set_att(id, "Arn", str_of(&desc["TableArn"]));
        if let Some(s) = desc["LatestStreamArn"].as_str() {
            attrs.set_att(id, "StreamArn", s);
        }
        if let Some(ttl) = props.get("TimeToLiveSpecification") {
            if str_of(&ttl["Enabled"]) == "true" {
                aws.dynamodb(
                    "UpdateTimeToLive",
                    json!({"TableName": name, "TimeToLiveSpecification": {"AttributeName": ttl["AttributeName"], "Enabled": true}}),
                )
                .await
                .map_err(|e| format!("{id}: UpdateTimeToLive: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Secrets, from the template's parameters; then each `--put-secret`, as
/// `PutSecretValue` after the stack was made and before any function
/// started (what a user does on AWS before the first delivery).
async fn create_secrets(t: &Template, attrs: &mut Attrs, aws: &Aws, puts: &[String]) -> Result<(), String> {
    let mut puts: HashMap<&str, String> = puts
        .iter()
        .map(|p| {
            let (id, file) = p.split_once('=').ok_or_else(|| format!("--put-secret {p:?}: write LogicalId=FILE"))?;
            let value = std::fs::read_to_string(file).map_err(|e| format!("--put-secret {id}: {file}: {e}"))?;
            Ok((id, value))
        })
        .collect::<Result<_, String>>()?;
    for (id, r) in t.live().filter(|(_, r)| r.kind == "AWS::SecretsManager::Secret") {
        let props = t.resolve(&Value::Object(r.properties.clone()), attrs)?;
        let props = props.as_object().cloned().unwrap_or_default();
        only_keys(
            &format!("{id} (AWS::SecretsManager::Secret)"),
            &props,
            &["Name", "Description", "SecretString", "Tags", "KmsKeyId"],
        )?;
        let name = props.get("Name").map(str_of).unwrap_or_else(|| format!("{id}-{}", suffix()));
        let secret = props
            .get("SecretString")
            .map(str_of)
            .ok_or_else(|| format!("{id}: no SecretString (GenerateSecretString is not modelled)"))?;
        let out = aws
            .secrets("CreateSecret", json!({"Name": name, "SecretString": secret}))
            .await
            .map_err(|e| format!("{id}: CreateSecret: {e}"))?;
        attrs.set_ref(id, str_of(&out["ARN"]));
        if let Some(value) = puts.remove(id.as_str()) {
            aws.secrets("PutSecretValue", json!({"SecretId": name, "SecretString": value}))
                .await
                .map_err(|e| format!("{id}: PutSecretValue: {e}"))?;
        }
    }
    match puts.keys().next() {
        Some(id) => Err(format!("--put-secret: the template has no secret {id}")),
        None => Ok(()),
    }
}

/// Each queue of the template: its URL and visibility timeout, by ARN.
pub(super) struct Queues {
    pub(super) urls: HashMap<String, String>,
    pub(super) visibility: HashMap<String, Duration>,
}

/// What provisioning made and started.
pub(super) struct Provisioned {
    /// moto, when started here (stopped when dropped).
    pub(super) moto: Option<tokio::process::Child>,
    pub(super) endpoint: String,
    pub(super) meter: Arc<crate::bill::Meter>,
    pub(super) account: Arc<crate::limits::Account>,
    pub(super) front: crate::front::Front,
    /// The AWS the functions and event sources call: the front's.
    pub(super) billed: Aws,
    pub(super) attrs: Attrs,
    pub(super) queues: Queues,
}

/// Starts moto (unless given one) and the DynamoDB front; then names every
/// resource and creates the queues, tables and secrets.
pub(super) async fn provision(args: &EmulateArgs, t: &Template) -> Result<Provisioned, String> {
    let project =
        args.template.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into());

    let (moto, endpoint) = match &args.aws_endpoint {
        Some(e) => (None, e.clone()),
        None => {
            let (c, url) = start_moto(&project).await?;
            (Some(c), url)
        }
    };
    let aws = Aws::new(&endpoint, &args.region);
    let meter = Arc::new(crate::bill::Meter::default());
    let account = Arc::new(crate::limits::Account::new(args.apigw_account_rate, args.apigw_account_burst));
    let front = crate::front::start(
        &endpoint,
        crate::front::FrontOptions { throttle_rate: args.dynamodb_throttle, ..Default::default() },
        meter.clone(),
    )
    .await
    .map_err(|e| format!("DynamoDB front: {e}"))?;
    // What the functions and the event sources call goes through the front,
    // which counts it for the bill; provisioning goes to moto directly.
    let billed = Aws::new(&front.url, &args.region);

    // Provisioning: every Ref and ARN first, then queues, tables and secrets.
    let (mut attrs, queue_names) = name_resources(t, &aws, &args.region, &args.stack_name)?;
    let (urls, visibility) = create_queues(t, &mut attrs, &aws, &queue_names).await?;
    create_tables(t, &mut attrs, &aws, &args.stack_name).await?;
    create_secrets(t, &mut attrs, &aws, &args.put_secret).await?;
    Ok(Provisioned { moto, endpoint, meter, account, front, billed, attrs, queues: Queues { urls, visibility } })
}
