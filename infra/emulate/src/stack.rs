//! The stack: provisions the template's table, queues and secrets in moto,
//! starts every function's bootstrap, serves both APIs, starts the event
//! sources, and says when all of it is ready.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{json, Map, Value};

use crate::aws::Aws;
use crate::runtime::{Function, FunctionSpec};
use crate::sources::{QueueSource, StreamSource};
use crate::template::{str_of, Attrs, Template, ACCOUNT, INERT};

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// `hookcast emulate`'s flags.
#[derive(clap::Args, Clone, Debug)]
pub struct EmulateArgs {
    /// The SAM template.
    #[arg(long, short = 't', default_value = "template.yaml")]
    pub template: PathBuf,
    /// Where `sam build` put each function's bootstrap (<dir>/<LogicalId>/bootstrap).
    #[arg(long, default_value = ".aws-sam/build")]
    pub build_dir: PathBuf,
    /// Template parameters, as SAM takes them: `Key=Value …` or
    /// `ParameterKey=K,ParameterValue=V …`.
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    pub parameter_overrides: Vec<String>,
    /// An AWS-compatible endpoint (moto's server) for DynamoDB, its stream,
    /// SQS and Secrets Manager; default: start moto from the project's
    /// .tools/venv (tests/run installs it).
    #[arg(long, env = "HOOKCAST_AWS_ENDPOINT")]
    pub aws_endpoint: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    #[arg(long, default_value = "hookcast")]
    pub stack_name: String,
    /// Once ready, write {"websocket": …, "http": …} here.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// The account's Lambda concurrency (AWS's default is 1,000; new
    /// accounts may have less, "New AWS accounts have reduced concurrency").
    #[arg(long, default_value_t = crate::runtime::ACCOUNT_CONCURRENCY)]
    pub account_concurrency: usize,
    /// A WebSocket connection with no frame from its client for this long closes (API Gateway: 10m).
    #[arg(long, value_parser = duration, default_value = "10m")]
    pub idle_limit: Duration,
    /// A WebSocket connection's whole life (API Gateway: 2h).
    #[arg(long, value_parser = duration, default_value = "2h")]
    pub max_lifetime: Duration,
    /// The HTTP API's integration timeout (API Gateway: 30s).
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub http_timeout: Duration,
    /// How long an @connections call takes at the median (AWS publishes no
    /// figure; tens of milliseconds as seen from Lambda).
    #[arg(long, value_parser = duration, default_value = "20ms")]
    pub connections_latency: Duration,
    /// … and at the 99th percentile (a log-normal between the two).
    #[arg(long, value_parser = duration, default_value = "60ms")]
    pub connections_latency_p99: Duration,
    /// API Gateway's account throttle, requests per second, shared by both
    /// APIs and @connections (10,000; 2,500 in some regions).
    #[arg(long, default_value_t = crate::limits::ACCOUNT_RATE)]
    pub apigw_account_rate: f64,
    /// … and its bucket (5,000; 1,250 in those regions).
    #[arg(long, default_value_t = crate::limits::ACCOUNT_BURST)]
    pub apigw_account_burst: f64,
    /// DynamoDB requests per second beyond which the front throttles
    /// (ProvisionedThroughputExceededException); default: no throttling.
    #[arg(long)]
    pub dynamodb_throttle: Option<u32>,
    /// Invoke $disconnect for connections lost without a close frame (API
    /// Gateway does so only eventually, and not always; default: never).
    #[arg(long)]
    pub disconnect_on_loss: bool,
    /// Where API Gateway's access logs go (a file per log group); default:
    /// a new directory under the system's temporary directory.
    #[arg(long)]
    pub logs_dir: Option<PathBuf>,
    /// Processes per function at most (below its reserved concurrency).
    #[arg(long, default_value_t = 64)]
    pub max_processes: usize,
}

/// Why the stack did not start, or stopped: each as a person reads it
/// (what is wrong and, where it helps, what to do).
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The template file cannot be read.
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The template or its parameters are not what hookcast emulate takes.
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    /// A template key or event type that is not modelled.
    #[error(transparent)]
    Audit(#[from] crate::keys::AuditError),
    /// moto, the DynamoDB front, or a table, queue or secret could not be made.
    #[error("{0}")]
    Provision(String),
    /// The APIs' resources (routes, integrations, stages) are not modelled,
    /// or do not go together.
    #[error("{0}")]
    Api(String),
    /// A function or one of its events is not modelled, or cannot run here.
    #[error("{0}")]
    Function(String),
    /// Functions that did not finish their init.
    #[error("the stack is not ready:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    NotReady(Vec<crate::runtime::InitError>),
    /// Serving: the HTTP API's port, the ready file, the signals.
    #[error("{0}")]
    Serve(String),
}

/// A running stack.
pub struct Stack {
    pub websocket: String,
    pub http: String,
    pub dynamodb: String,
    pub aws: String,
    pub functions: HashMap<String, Arc<Function>>,
    pub ws: crate::apigw::Emulator,
    pub front: crate::front::Front,
    pub meter: Arc<crate::bill::Meter>,
    /// Where the access logs are.
    pub logs_dir: PathBuf,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
    _moto: Option<tokio::process::Child>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for t in &self._tasks {
            t.abort();
        }
        for f in self.functions.values() {
            f.stop();
        }
    }
}

fn suffix() -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..12).map(|_| A[rand::random::<u32>() as usize % A.len()] as char).collect()
}

fn api_id() -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..10).map(|_| A[rand::random::<u32>() as usize % A.len()] as char).collect()
}

fn only_keys(what: &str, m: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    for k in m.keys() {
        if !known.contains(&k.as_str()) {
            return Err(format!("{what}: property {k} is not modelled by hookcast emulate"));
        }
    }
    Ok(())
}

/// Starts moto's server from the project's venv (beside the template, or in
/// the working directory); its URL.
async fn start_moto(project: &Path) -> Result<(tokio::process::Child, String), String> {
    let here = std::env::current_dir().unwrap_or_default();
    let project = [project, here.as_path()]
        .into_iter()
        .find(|p| p.join(".tools/venv/bin/python").exists() && p.join("tests/aws/moto_server.py").exists())
        .unwrap_or(project);
    let python = project.join(".tools/venv/bin/python");
    let script = project.join("tests/aws/moto_server.py");
    if !python.exists() || !script.exists() {
        return Err(format!(
            "no moto to start: {} or {} is missing (run ./tests/run once, which installs it, or pass --aws-endpoint URL)",
            python.display(),
            script.display()
        ));
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

/// `MaximumBatchingWindowInSeconds` of an event source (0 when unset).
fn batching_window(props: &Map<String, Value>, what: &str) -> Result<Duration, String> {
    match props.get("MaximumBatchingWindowInSeconds").map(str_of) {
        None => Ok(Duration::ZERO),
        Some(w) => w
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{what}: MaximumBatchingWindowInSeconds {w:?} is not a whole number of seconds")),
    }
}

struct WsRoute {
    key: String,
    integration: String,
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

/// Secrets, from the template's parameters.
async fn create_secrets(t: &Template, attrs: &mut Attrs, aws: &Aws) -> Result<(), String> {
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
    }
    Ok(())
}

/// Reads the template, provisions it and starts everything. Errors are
/// for a person: what is wrong and, where it helps, what to do.
pub async fn start(args: &EmulateArgs) -> Result<Stack, StackError> {
    let text =
        std::fs::read_to_string(&args.template).map_err(|source| StackError::Read { path: args.template.clone(), source })?;
    let overrides = crate::template::parse_overrides(&args.parameter_overrides)?;
    let t = Template::parse(&text, &overrides, &args.region, &args.stack_name)?;
    let inert = crate::keys::audit(&t)?;
    if !inert.is_empty() {
        eprintln!("hookcast emulate: these change nothing on a running stack and are not emulated:\n  {}", inert.join("\n  "));
    }
    let Provisioned { moto, endpoint, meter, account, front, billed, attrs, queues } =
        provision(args, &t).await.map_err(StackError::Provision)?;
    let logs_dir = args.logs_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("hookcast-emulate-{}-{}", std::process::id(), suffix().to_lowercase()))
    });
    let (ws_api, http_api) = read_apis(&t, &attrs, &logs_dir).map_err(StackError::Api)?;
    let function_cell: Arc<OnceLock<HashMap<String, Arc<Function>>>> = Arc::default();
    let ws = start_websocket(args, &t, &attrs, ws_api, function_cell.clone(), &account, &meter).await.map_err(StackError::Api)?;
    let http_listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| StackError::Serve(format!("HTTP API: {e}")))?;
    let http_url = format!("http://{}", http_listener.local_addr().map_err(|e| StackError::Serve(e.to_string()))?);

    // The execute-api hosts the template names, and where they are here.
    let mut rewrites = vec![];
    for (id, r) in t.live() {
        if let Ok(api) = attrs.reference(id) {
            let host = format!("https://{api}.execute-api.{}.amazonaws.com", args.region);
            match r.kind.as_str() {
                "AWS::ApiGatewayV2::Api" => rewrites.push((host, format!("http://{}", ws.addr()))),
                "AWS::Serverless::HttpApi" => rewrites.push((host, http_url.clone())),
                _ => {}
            }
        }
    }
    let place = Place { args, t: &t, attrs: &attrs, front_url: &front.url, meter: &meter, rewrites: &rewrites, queues: &queues };
    let Functions { functions, http_routes, stream_sources, queue_sources } =
        start_functions(&place).map_err(StackError::Function)?;
    let _set = function_cell.set(functions.clone());

    // Ready when every function has initialised: its own error otherwise.
    let warmed = futures::future::join_all(functions.values().map(|f| f.warm())).await;
    let errors: Vec<crate::runtime::InitError> = warmed.into_iter().filter_map(Result::err).collect();
    if !errors.is_empty() {
        for f in functions.values() {
            f.stop();
        }
        return Err(StackError::NotReady(errors));
    }

    let mut tasks = vec![];
    let faults: crate::http_api::Control = {
        let (functions, ws) = (functions.clone(), ws.clone());
        Arc::new(move |req: Value| fault(&functions, &ws, &req))
    };
    let router = crate::http_api::router(
        http_routes,
        crate::http_api::Options {
            timeout: args.http_timeout,
            limits: Some((account.clone(), Arc::new(http_api.throttles))),
            meter: meter.clone(),
            access_log: http_api.access_log,
            faults: Some(faults),
        },
    );
    tasks.push(tokio::spawn(async move {
        let _stopped = axum::serve(http_listener, router).await;
    }));
    // The event sources, polling as Lambda does.
    for (src, f) in stream_sources {
        tasks.push(tokio::spawn(crate::sources::poll_stream(billed.clone(), src, f)));
    }
    for (src, f) in queue_sources {
        tasks.push(tokio::spawn(crate::sources::poll_queue(billed.clone(), src, f)));
    }
    Ok(Stack {
        websocket: ws.ws_url(),
        http: http_url,
        dynamodb: front.url.clone(),
        aws: endpoint,
        functions,
        ws,
        front,
        meter,
        logs_dir,
        _tasks: tasks,
        _moto: moto,
    })
}

/// Each queue of the template: its URL and visibility timeout, by ARN.
struct Queues {
    urls: HashMap<String, String>,
    visibility: HashMap<String, Duration>,
}

/// What provisioning made and started.
struct Provisioned {
    /// moto, when started here (stopped when dropped).
    moto: Option<tokio::process::Child>,
    endpoint: String,
    meter: Arc<crate::bill::Meter>,
    account: Arc<crate::limits::Account>,
    front: crate::front::Front,
    /// The AWS the functions and event sources call: the front's.
    billed: Aws,
    attrs: Attrs,
    queues: Queues,
}

/// Starts moto (unless given one) and the DynamoDB front; then names every
/// resource and creates the queues, tables and secrets.
async fn provision(args: &EmulateArgs, t: &Template) -> Result<Provisioned, String> {
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
    create_secrets(t, &mut attrs, &aws).await?;
    Ok(Provisioned { moto, endpoint, meter, account, front, billed, attrs, queues: Queues { urls, visibility } })
}

/// The WebSocket API as the template declares it.
#[derive(Default)]
struct WsApi {
    /// Its logical id (one at most).
    id: Option<String>,
    routes: Vec<(String, WsRoute)>,
    integrations: HashMap<String, Map<String, Value>>,
    mock_replies: HashMap<String, String>,
    route_responses: Vec<String>,
    stage_name: Option<String>,
    throttles: crate::limits::Routes,
    access_log: Option<Arc<crate::access_log::AccessLog>>,
}

/// The HTTP API's settings (its routes are its functions' events).
#[derive(Default)]
struct HttpApi {
    throttles: crate::limits::Routes,
    access_log: Option<Arc<crate::access_log::AccessLog>>,
}

/// Both APIs' resources, checked: routes, integrations, stages, throttles
/// and access logs (opened under `logs_dir`).
fn read_apis(t: &Template, attrs: &Attrs, logs_dir: &Path) -> Result<(WsApi, HttpApi), String> {
    // The WebSocket API: bound now, so the functions' environment can name it.
    let ws_apis: Vec<_> = t.live().filter(|(_, r)| r.kind == "AWS::ApiGatewayV2::Api").collect();
    if ws_apis.len() > 1 {
        return Err("more than one AWS::ApiGatewayV2::Api: hookcast emulate models one WebSocket API".into());
    }
    let mut ws = WsApi { id: ws_apis.first().map(|(id, _)| (*id).clone()), ..WsApi::default() };
    let mut http = HttpApi::default();
    let access_log = |what: &str, p: &Map<String, Value>| -> Result<Option<Arc<crate::access_log::AccessLog>>, String> {
        let Some(settings) = p.get("AccessLogSettings").and_then(Value::as_object) else { return Ok(None) };
        only_keys(&format!("{what}.AccessLogSettings"), settings, &["DestinationArn", "Format"])?;
        let log =
            crate::access_log::AccessLog::open(logs_dir, &str_of(&settings["DestinationArn"]), &str_of(&settings["Format"]))
                .map_err(|e| e.to_string())?;
        Ok(Some(Arc::new(log)))
    };
    for (id, r) in t.live() {
        let props = || -> Result<Map<String, Value>, String> {
            Ok(t.resolve(&Value::Object(r.properties.clone()), attrs)?.as_object().cloned().unwrap_or_default())
        };
        match r.kind.as_str() {
            "AWS::ApiGatewayV2::Api" => {
                let p = props()?;
                if str_of(&p["ProtocolType"]) != "WEBSOCKET" {
                    return Err(format!("{id}: ProtocolType {} is not modelled (WEBSOCKET is)", p["ProtocolType"]));
                }
                let sel = str_of(&p["RouteSelectionExpression"]);
                if sel != "$request.body.action" {
                    return Err(format!("{id}: RouteSelectionExpression {sel:?} is not modelled ($request.body.action is)"));
                }
            }
            "AWS::ApiGatewayV2::Integration" => {
                ws.integrations.insert(attrs.reference(id)?, props()?);
            }
            "AWS::ApiGatewayV2::Route" => {
                let p = props()?;
                let target = str_of(&p["Target"]);
                let integration = target
                    .strip_prefix("integrations/")
                    .ok_or_else(|| format!("{id}: Target {target:?} is not integrations/<id>"))?;
                if p.get("AuthorizationType").is_some_and(|a| str_of(a) != "NONE") {
                    return Err(format!("{id}: AuthorizationType {} is not modelled", p["AuthorizationType"]));
                }
                ws.routes
                    .push((attrs.reference(id)?, WsRoute { key: str_of(&p["RouteKey"]), integration: integration.to_owned() }));
            }
            "AWS::ApiGatewayV2::IntegrationResponse" => {
                let p = props()?;
                if let Some(reply) = p.get("ResponseTemplates").and_then(|m| m.get("$default")) {
                    ws.mock_replies.insert(str_of(&p["IntegrationId"]), str_of(reply));
                }
            }
            "AWS::ApiGatewayV2::RouteResponse" => {
                ws.route_responses.push(str_of(&props()?["RouteId"]));
            }
            "AWS::Serverless::HttpApi" => {
                let p = props()?;
                only_keys(
                    &format!("{id} (AWS::Serverless::HttpApi)"),
                    &p,
                    &["DefaultRouteSettings", "RouteSettings", "AccessLogSettings", "Description"],
                )?;
                http.throttles = crate::limits::Routes::from_settings(p.get("DefaultRouteSettings"), p.get("RouteSettings"))
                    .map_err(|e| format!("{id}: {e}"))?;
                http.access_log = access_log(id, &p)?;
            }
            "AWS::ApiGatewayV2::Stage" => {
                let p = props()?;
                only_keys(
                    &format!("{id} (AWS::ApiGatewayV2::Stage)"),
                    &p,
                    &[
                        "ApiId",
                        "StageName",
                        "AutoDeploy",
                        "DefaultRouteSettings",
                        "RouteSettings",
                        "AccessLogSettings",
                        "Description",
                    ],
                )?;
                ws.stage_name = Some(str_of(&p["StageName"]));
                ws.throttles = crate::limits::Routes::from_settings(p.get("DefaultRouteSettings"), p.get("RouteSettings"))
                    .map_err(|e| format!("{id}: {e}"))?;
                ws.access_log = access_log(id, &p)?;
            }
            _ => {}
        }
    }
    Ok((ws, http))
}

/// Serves the WebSocket API: each route to its function (found in
/// `functions` once they have started) or its MOCK reply.
async fn start_websocket(
    args: &EmulateArgs,
    t: &Template,
    attrs: &Attrs,
    api: WsApi,
    functions: Arc<OnceLock<HashMap<String, Arc<Function>>>>,
    account: &Arc<crate::limits::Account>,
    meter: &Arc<crate::bill::Meter>,
) -> Result<crate::apigw::Emulator, String> {
    // Route key → function logical id, or a MOCK reply.
    let mut route_fn: HashMap<String, String> = HashMap::new();
    let mut mock_routes = vec![];
    // Routes whose function's response body API Gateway sends back (two-way).
    let mut reply_routes = vec![];
    for (route_id, r) in &api.routes {
        let integ =
            api.integrations.get(&r.integration).ok_or_else(|| format!("route {}: no integration {}", r.key, r.integration))?;
        match str_of(&integ["IntegrationType"]).as_str() {
            "AWS_PROXY" => {
                let uri = str_of(&integ["IntegrationUri"]);
                let f = t
                    .live()
                    .filter(|(_, x)| x.kind == "AWS::Serverless::Function")
                    .find(|(fid, _)| {
                        attrs.get_att(fid, "Arn").is_ok_and(|arn| uri.contains(&format!("functions/{arn}/invocations")))
                    })
                    .map(|(fid, _)| fid.clone())
                    .ok_or_else(|| format!("route {}: IntegrationUri {uri} names no function of this template", r.key))?;
                route_fn.insert(r.key.clone(), f);
                if api.route_responses.contains(route_id) {
                    reply_routes.push(r.key.clone());
                }
            }
            "MOCK" => {
                // API Gateway answers a MOCK route itself, with the integration
                // response's template, when the route has a route response.
                // Without a route response it answers nothing.
                if let Some(reply) = api.mock_replies.get(&r.integration).filter(|_| api.route_responses.contains(route_id)) {
                    mock_routes.push((r.key.clone(), reply.clone()));
                }
            }
            other => return Err(format!("route {}: integration type {other} is not modelled", r.key)),
        }
    }
    let route_fn = Arc::new(route_fn);
    let invoke: crate::apigw::Invoke = Arc::new(move |ev: Value| {
        let (fcell, rf) = (functions.clone(), route_fn.clone());
        Box::pin(async move {
            let key = ev["requestContext"]["routeKey"].as_str().unwrap_or("$default").to_owned();
            let Some(f) = rf.get(&key).and_then(|id| fcell.get().and_then(|m| m.get(id))) else {
                // No route: API Gateway accepts a connection without $connect.
                return Ok(json!({"statusCode": 200}));
            };
            match f.invoke(Bytes::from(ev.to_string())).await {
                Ok(out) => Ok(serde_json::from_slice(&out).unwrap_or(json!({"statusCode": 200}))),
                Err(e) => {
                    tracing::warn!(route = %key, error = %e, "WebSocket integration failed");
                    Err(e)
                }
            }
        })
    });
    let stage = api.stage_name.clone().unwrap_or_else(|| "$default".into());
    let ws = crate::apigw::start(
        crate::apigw::Options {
            stage: stage.clone(),
            routes: api.routes.iter().map(|(_, r)| r.key.clone()).filter(|k| !k.starts_with('$')).collect(),
            latency: crate::apigw::Latency { median: args.connections_latency, p99: args.connections_latency_p99 },
            rate_limit: None,
            burst: 0,
            throttle_first: 0,
            mock_routes,
            reply_routes,
            concurrent_frames: true,
            disconnect_on_loss: args.disconnect_on_loss,
            idle_limit: args.idle_limit,
            max_lifetime: args.max_lifetime,
            limits: Some((account.clone(), Arc::new(api.throttles))),
            meter: meter.clone(),
            access_log: api.access_log,
            api_arn: format!(
                "arn:aws:execute-api:{}:{ACCOUNT}:{}",
                args.region,
                api.id.as_ref().map(|id| attrs.reference(id)).transpose()?.unwrap_or_default()
            ),
        },
        invoke,
    )
    .await;
    {
        let ws = ws.clone();
        meter.set_open_connection_ms(move || ws.open_connection_ms());
    }
    Ok(ws)
}

/// Where the functions start: the template, resolved, and what they call.
struct Place<'a> {
    args: &'a EmulateArgs,
    t: &'a Template,
    attrs: &'a Attrs,
    /// The DynamoDB front's URL (the functions' AWS endpoint).
    front_url: &'a str,
    meter: &'a Arc<crate::bill::Meter>,
    /// execute-api hosts → where those APIs are here.
    rewrites: &'a [(String, String)],
    queues: &'a Queues,
}

/// The functions, and what their events attach them to.
#[derive(Default)]
struct Functions {
    functions: HashMap<String, Arc<Function>>,
    http_routes: Vec<crate::http_api::Route>,
    stream_sources: Vec<(StreamSource, Arc<Function>)>,
    queue_sources: Vec<(QueueSource, Arc<Function>)>,
}

/// Every function (not yet warm), in the account's concurrency, with its
/// events: HTTP API routes and event sources.
fn start_functions(place: &Place<'_>) -> Result<Functions, String> {
    let (t, attrs) = (place.t, place.attrs);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "arm64",
        other => other,
    };
    // The account's concurrency, with every reservation set aside first.
    let mut reserved_total = 0;
    for (id, r) in t.live().filter(|(_, r)| r.kind == "AWS::Serverless::Function") {
        // Resolved with the rest of the properties, so an !If to AWS::NoValue is no reservation.
        let props = t.resolve(&Value::Object(r.properties.clone()), attrs)?;
        if let Some(v) = props.get("ReservedConcurrentExecutions") {
            let v = str_of(v);
            reserved_total +=
                v.parse::<usize>().map_err(|_| format!("{id}: ReservedConcurrentExecutions {v:?} is not a whole number"))?;
        }
    }
    let pool = crate::runtime::Concurrency::new(place.args.account_concurrency, reserved_total).map_err(|e| e.to_string())?;
    let mut out = Functions::default();
    for (id, r) in t.live().filter(|(_, r)| r.kind == "AWS::Serverless::Function") {
        let (f, p, policy) = function(place, id, &r.properties, arch, &pool)?;
        for (ev_name, ev) in p["Events"].as_object().into_iter().flatten() {
            let ep = ev["Properties"].as_object().cloned().unwrap_or_default();
            let ewhat = format!("{id}.Events.{ev_name}");
            match str_of(&ev["Type"]).as_str() {
                "HttpApi" => out.http_routes.push(http_event(&ewhat, &ep, &f)?),
                "DynamoDB" => {
                    if let Some(src) = stream_event(&ewhat, &ep, &policy, place.queues)? {
                        out.stream_sources.push((src, f.clone()));
                    }
                }
                "SQS" => {
                    if let Some(src) = queue_event(&ewhat, &ep, &policy, place.queues)? {
                        out.queue_sources.push((src, f.clone()));
                    }
                }
                other => return Err(format!("{ewhat}: event type {other} is not modelled (HttpApi, DynamoDB and SQS are)")),
            }
        }
        out.functions.insert(id.clone(), f);
    }
    Ok(out)
}

/// One function: its properties (over the template's Globals) checked and
/// resolved, its bootstrap, environment and policy. Also its resolved
/// properties and its policy, which its events are checked against.
fn function(
    place: &Place<'_>,
    id: &str,
    properties: &Map<String, Value>,
    arch: &str,
    pool: &Arc<crate::runtime::Concurrency>,
) -> Result<(Arc<Function>, Value, Arc<crate::iam::Policy>), String> {
    let (args, t, attrs, region) = (place.args, place.t, place.attrs, &place.args.region);
    let mut merged = t.globals_function.clone();
    for (k, v) in properties {
        if k == "Environment" {
            let mut vars = merged
                .get("Environment")
                .and_then(|e| e.get("Variables"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (vk, vv) in v.get("Variables").and_then(Value::as_object).into_iter().flatten() {
                vars.insert(vk.clone(), vv.clone());
            }
            merged.insert("Environment".into(), json!({ "Variables": vars }));
        } else {
            merged.insert(k.clone(), v.clone());
        }
    }
    let what = format!("{id} (AWS::Serverless::Function)");
    only_keys(
        &what,
        &merged,
        &[
            "Runtime",
            "Handler",
            "Architectures",
            "MemorySize",
            "Timeout",
            "Environment",
            "CodeUri",
            "Description",
            "Policies",
            "Events",
            "ReservedConcurrentExecutions",
            "Tags",
            "Role",
        ],
    )?;
    let p = t.resolve(&Value::Object(merged), attrs)?;
    let runtime = str_of(&p["Runtime"]);
    if !["provided.al2023", "provided.al2"].contains(&runtime.as_str()) {
        return Err(format!("{what}: Runtime {runtime} is not modelled (provided.al2023 and provided.al2 are)"));
    }
    let archs: Vec<String> =
        p["Architectures"].as_array().map(|a| a.iter().map(str_of).collect()).unwrap_or_else(|| vec!["x86_64".into()]);
    if archs.first().map(String::as_str) != Some(arch) {
        return Err(format!("{what}: built for {archs:?}; this machine runs {arch} bootstraps"));
    }
    // Absolute: each process starts in its own function's directory.
    let build_dir = std::path::absolute(&args.build_dir).map_err(|e| format!("--build-dir {}: {e}", args.build_dir.display()))?;
    let bootstrap = build_dir.join(id).join("bootstrap");
    if !bootstrap.exists() {
        return Err(format!("{what}: no {} (run `sam build --beta-features` first, or pass --build-dir)", bootstrap.display()));
    }
    let timeout = Duration::from_secs(p["Timeout"].as_u64().or_else(|| str_of(&p["Timeout"]).parse().ok()).unwrap_or(3));
    let memory = p["MemorySize"].as_u64().or_else(|| str_of(&p["MemorySize"]).parse().ok()).unwrap_or(128) as u32;
    let name = attrs.reference(id)?;
    let rewrite = |v: String| place.rewrites.iter().fold(v, |v, (from, to)| v.replace(from, to));
    let mut env: Vec<(String, String)> =
        p["Environment"]["Variables"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), rewrite(str_of(v)))).collect();
    for (k, v) in [
        ("AWS_REGION", region.clone()),
        ("AWS_DEFAULT_REGION", region.clone()),
        ("AWS_ACCESS_KEY_ID", "emulated".into()),
        ("AWS_SECRET_ACCESS_KEY", "emulated".into()),
        ("AWS_SESSION_TOKEN", "emulated".into()),
        ("AWS_ENDPOINT_URL", place.front_url.to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", place.front_url.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "emulated".into()),
        ("AWS_EXECUTION_ENV", format!("AWS_Lambda_{runtime}")),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("TZ", ":UTC".into()),
        ("LANG", "en_US.UTF-8".into()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
    ] {
        env.push((k.into(), v));
    }
    let reserved = p.get("ReservedConcurrentExecutions").and_then(|v| str_of(v).parse::<usize>().ok());
    let policy =
        Arc::new(crate::iam::Policy::of_function(t, attrs, id, p.as_object().unwrap_or(&Map::new())).map_err(|e| e.to_string())?);
    policy.check_service(&what, &crate::iam::logs_asks(region, &name)).map_err(|e| e.to_string())?;
    let usage = place.meter.function(id);
    usage.arm.store(arch == "arm64", std::sync::atomic::Ordering::Relaxed);
    let f = Function::in_account(
        FunctionSpec {
            logical: id.to_owned(),
            name: name.clone(),
            arn: attrs.get_att(id, "Arn")?,
            bootstrap,
            env,
            timeout,
            concurrency: reserved.unwrap_or(args.max_processes).min(args.max_processes),
            init_timeout: crate::runtime::INIT_LIMIT,
            reserved,
            memory_mb: memory,
            policy: Some(policy.clone()),
        },
        pool.clone(),
        usage,
    );
    Ok((f, p, policy))
}

/// An `HttpApi` event: the function's route on the HTTP API.
fn http_event(ewhat: &str, ep: &Map<String, Value>, f: &Arc<Function>) -> Result<crate::http_api::Route, String> {
    only_keys(ewhat, ep, &["ApiId", "Path", "Method", "TimeoutInMillis", "PayloadFormatVersion"])?;
    if ep.get("PayloadFormatVersion").is_some_and(|v| str_of(v) != "2.0") {
        return Err(format!("{ewhat}: PayloadFormatVersion {} is not modelled (2.0 is)", ep["PayloadFormatVersion"]));
    }
    let timeout = match ep.get("TimeoutInMillis").map(str_of) {
        None => None,
        Some(ms) => {
            // "between 50 and 30,000 milliseconds for HTTP APIs"
            let ms: u64 = ms
                .parse()
                .ok()
                .filter(|m| (50..=30_000).contains(m))
                .ok_or_else(|| format!("{ewhat}: TimeoutInMillis {ms:?} is not 50 to 30000"))?;
            Some(Duration::from_millis(ms))
        }
    };
    Ok(crate::http_api::Route {
        method: str_of(&ep["Method"]).to_uppercase(),
        path: str_of(&ep["Path"]),
        function: f.clone(),
        timeout,
    })
}

/// A `DynamoDB` event: the stream source polling for the function (none
/// when the mapping is created disabled).
fn stream_event(
    ewhat: &str,
    ep: &Map<String, Value>,
    policy: &crate::iam::Policy,
    queues: &Queues,
) -> Result<Option<StreamSource>, String> {
    only_keys(
        ewhat,
        ep,
        &[
            "Stream",
            "StartingPosition",
            "BatchSize",
            "MaximumBatchingWindowInSeconds",
            "BisectBatchOnFunctionError",
            "MaximumRetryAttempts",
            "DestinationConfig",
            "FilterCriteria",
            "FunctionResponseTypes",
            "ParallelizationFactor",
            "Enabled",
            "MaximumRecordAgeInSeconds",
        ],
    )?;
    if ep.get("ParallelizationFactor").is_some_and(|v| str_of(v) != "1") {
        return Err(format!("{ewhat}: ParallelizationFactor above 1 is not modelled"));
    }
    let mut filters = vec![];
    for fl in ep.get("FilterCriteria").and_then(|c| c["Filters"].as_array()).into_iter().flatten() {
        let pat: Value = serde_json::from_str(&str_of(&fl["Pattern"]))
            .map_err(|e| format!("{ewhat}: a filter pattern that is not JSON: {e}"))?;
        crate::sources::check_pattern(&pat).map_err(|e| format!("{ewhat}: {e}"))?;
        filters.push(pat);
    }
    let on_failure = match ep.get("DestinationConfig").and_then(|d| d.get("OnFailure")) {
        Some(of) => {
            let arn = str_of(&of["Destination"]);
            Some(
                queues
                    .urls
                    .get(&arn)
                    .cloned()
                    .ok_or_else(|| format!("{ewhat}: the on-failure destination {arn} is not a queue of this template"))?,
            )
        }
        None => None,
    };
    policy.check_service(ewhat, &crate::iam::stream_source_asks(&str_of(&ep["Stream"]))).map_err(|e| e.to_string())?;
    if let Some(of) = ep.get("DestinationConfig").and_then(|d| d.get("OnFailure")) {
        policy
            .check_service(ewhat, &[crate::iam::Ask::new("sqs:SendMessage", str_of(&of["Destination"]))])
            .map_err(|e| e.to_string())?;
    }
    // A mapping created disabled polls nothing.
    if ep.get("Enabled").is_some_and(|e| str_of(e) == "false") {
        return Ok(None);
    }
    Ok(Some(StreamSource {
        stream_arn: str_of(&ep["Stream"]),
        trim_horizon: str_of(&ep["StartingPosition"]) == "TRIM_HORIZON",
        batch_size: ep.get("BatchSize").and_then(|b| str_of(b).parse().ok()).unwrap_or(100),
        bisect: ep.get("BisectBatchOnFunctionError").is_some_and(|b| str_of(b) == "true"),
        max_retries: ep.get("MaximumRetryAttempts").and_then(|b| str_of(b).parse().ok()).unwrap_or(-1),
        on_failure,
        filters,
        report_item_failures: ep
            .get("FunctionResponseTypes")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| str_of(x) == "ReportBatchItemFailures")),
        batching_window: batching_window(ep, ewhat)?,
        max_record_age: match ep.get("MaximumRecordAgeInSeconds").map(str_of) {
            None => None,
            Some(a) if a == "-1" => None,
            Some(a) => Some(Duration::from_secs(
                a.parse().map_err(|_| format!("{ewhat}: MaximumRecordAgeInSeconds {a:?} is not a number"))?,
            )),
        },
    }))
}

/// An `SQS` event: the queue source polling for the function (none when
/// the mapping is created disabled).
fn queue_event(
    ewhat: &str,
    ep: &Map<String, Value>,
    policy: &crate::iam::Policy,
    queues: &Queues,
) -> Result<Option<QueueSource>, String> {
    only_keys(
        ewhat,
        ep,
        &["Queue", "BatchSize", "FunctionResponseTypes", "ScalingConfig", "MaximumBatchingWindowInSeconds", "Enabled"],
    )?;
    let arn = str_of(&ep["Queue"]);
    let url =
        queues.urls.get(&arn).cloned().ok_or_else(|| format!("{ewhat}: the queue {arn} is not a queue of this template"))?;
    policy.check_service(ewhat, &crate::iam::sqs_source_asks(&arn)).map_err(|e| e.to_string())?;
    if ep.get("Enabled").is_some_and(|e| str_of(e) == "false") {
        return Ok(None);
    }
    Ok(Some(QueueSource {
        queue_url: url,
        queue_arn: arn.clone(),
        batch_size: ep.get("BatchSize").and_then(|b| str_of(b).parse().ok()).unwrap_or(10),
        report_item_failures: ep
            .get("FunctionResponseTypes")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| str_of(x) == "ReportBatchItemFailures")),
        // Without a cap Lambda scales to the queue; FIFO groups bound it.
        max_concurrency: ep
            .get("ScalingConfig")
            .and_then(|s| s.get("MaximumConcurrency"))
            .and_then(|m| str_of(m).parse().ok())
            .unwrap_or(5),
        batching_window: batching_window(ep, ewhat)?,
        visibility: queues.visibility.get(&arn).copied().unwrap_or(Duration::from_secs(30)),
    }))
}

/// A test's fault (`POST /__emulate/faults` on the HTTP API):
/// `{"service":"lambda","function":"<LogicalId>","count":N}` throttles the
/// function's next N invocations; `{"service":"websocket","route":"subscribe",
/// "mode":"drop"|"error"|"throttle","count":N}` breaks the route's next N
/// frames (`"route":"@connections","mode":"throttle"`: the next N posts get
/// 429). DynamoDB's faults are the front's own (`/__emulate/faults` there).
fn fault(
    functions: &HashMap<String, Arc<Function>>,
    ws: &crate::apigw::Emulator,
    req: &Value,
) -> Result<Value, crate::http_api::ControlError> {
    use crate::http_api::ControlError::{Field, Unknown};
    let count = req["count"].as_u64().filter(|c| *c > 0).ok_or(Field { field: "count", takes: "a whole number above 0" })? as u32;
    match req["service"].as_str() {
        Some("lambda") => {
            let name = req["function"].as_str().ok_or(Field { field: "function", takes: "a logical id" })?;
            functions.get(name).ok_or_else(|| Unknown { what: "function", name: name.to_owned() })?.throttle_next(count);
        }
        Some("websocket") => {
            let route = req["route"].as_str().ok_or(Field { field: "route", takes: "a route key or @connections" })?;
            let mode: crate::apigw::FaultMode = serde_json::from_value(req["mode"].clone())
                .map_err(|_| Field { field: "mode", takes: "drop, error or throttle" })?;
            ws.add_fault(route, mode, count);
        }
        _ => {
            return Err(Field {
                field: "service",
                takes: "lambda or websocket (DynamoDB's faults are at the front's /__emulate/faults)",
            })
        }
    }
    Ok(json!({"ok": true}))
}

/// `hookcast emulate`: start, say where, run until Ctrl-C or SIGTERM.
pub async fn run(args: EmulateArgs) -> Result<(), StackError> {
    let stack = start(&args).await?;
    let ready = json!({
        "websocket": stack.websocket, "http": stack.http, "dynamodb": stack.dynamodb, "aws": stack.aws,
        "bill": format!("{}/__emulate/bill", stack.http),
        "logs": stack.logs_dir.display().to_string(),
    });
    println!("{ready}");
    if let Some(path) = &args.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, ready.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| StackError::Serve(format!("{}: {e}", path.display())))?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| StackError::Serve(e.to_string()))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprint!("{}", stack.meter.summary());
    eprintln!("{}", json!({"bill": stack.meter.bill()}));
    drop(stack);
    Ok(())
}
