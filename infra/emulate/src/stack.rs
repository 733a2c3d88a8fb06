//! The stack: provisions the template's table, queues and secrets in moto
//! (`provision`), serves both APIs (`apis`), starts every function's
//! bootstrap (`functions`), starts the event sources, and says when all of
//! it is ready.

mod apis;
mod args;
mod functions;
mod layers;
mod place;
mod provision;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use crate::runtime::Function;
use crate::template::Template;

pub use args::EmulateArgs;
use functions::{start_functions, Functions};
use place::Place;
use provision::{provision, suffix, Provisioned};

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
    _opt: layers::OptDir,
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
    let (ws_api, http_api) = apis::read_apis(&t, &attrs, &logs_dir).map_err(StackError::Api)?;
    let function_cell: Arc<OnceLock<HashMap<String, Arc<Function>>>> = Arc::default();
    let ws = apis::start_websocket(args, &t, &attrs, ws_api, function_cell.clone(), &account, &meter)
        .await
        .map_err(StackError::Api)?;
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
    let opt = layers::OptDir::new();
    let opt_dir = opt.0.clone();
    let place = Place {
        args,
        t: &t,
        attrs: &attrs,
        front_url: &front.url,
        meter: &meter,
        rewrites: &rewrites,
        queues: &queues,
        opt_dir: &opt_dir,
    };
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
        _opt: opt,
    })
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
