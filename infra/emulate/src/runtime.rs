//! Lambda as it runs a `provided.al2023` function: the built `bootstrap` as
//! processes, each with its own Runtime API (`/next`, `/response`, `/error`,
//! `/init/error`, the deadline header), one invocation per process at a time,
//! more processes on demand, and the timeout enforced by killing the
//! process, as Lambda does. Lambda's limits hold as AWS documents them:
//!
//! - Concurrency: invocations in flight count against the function's
//!   reserved concurrency, or else the account's unreserved pool (the
//!   account's 1,000 less every reservation; at least 100 must stay
//!   unreserved). Past it an invocation is refused at once with 429
//!   `TooManyRequestsException`, never queued ("Lambda quotas": "Concurrent
//!   executions 1,000"; "Lambda function scaling": "additional requests fail
//!   with a throttling error (429 status code)"; `PutFunctionConcurrency`:
//!   "as long as you leave at least 100 simultaneous executions unreserved").
//!   New accounts may have less ("New AWS accounts have reduced concurrency
//!   and memory quotas"): `--account-concurrency`.
//! - Payloads: a synchronous invocation's request and response are at most
//!   6 MB ("Invoke": "For synchronous invocations, the maximum payload size
//!   is 6 MB"); here 6,000,000 bytes, the strict reading.
//! - Init: 10 s ("The Init phase is limited to 10 seconds"); an init that
//!   runs over is retried within the invocation's own timeout, as Lambda
//!   retries it at the first invocation.
//! - Billing: each invocation's duration (init included on a cold start),
//!   rounded up to the millisecond, times its memory, on the bill.
//!
//! Each process gets credentials of its own (`AWS_ACCESS_KEY_ID`, as Lambda
//! gives each execution environment its role's session), so the AWS front
//! can tell which instance made a call, and a test can kill the one that
//! makes a chosen call ([`kill_caller`]): a function that dies at exactly
//! that point.
//!
//! This machine runs at most a few dozen processes per function: an
//! invocation within the concurrency limit waits for one (kinder than AWS
//! only in latency; the wait is not billed).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot, Notify};

/// One function as the template declares it.
#[derive(Clone, Debug)]
pub struct FunctionSpec {
    /// The template's logical id.
    pub logical: String,
    /// The deployed name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub name: String,
    pub arn: String,
    pub bootstrap: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Processes at most on this machine (not an AWS limit: see [`Concurrency`]).
    pub concurrency: usize,
    /// How long the init phase may take before Lambda gives up (10 s on AWS).
    pub init_timeout: Duration,
    /// `ReservedConcurrentExecutions`, if the template sets it.
    pub reserved: Option<usize>,
    /// `MemorySize`, MB (billed duration is per MB).
    pub memory_mb: u32,
    /// Its role: what each of its processes' calls may do ([`crate::iam`]).
    pub policy: Option<Arc<crate::iam::Policy>>,
}

/// Lambda's init limit ("The Init phase is limited to 10 seconds").
pub const INIT_LIMIT: Duration = Duration::from_secs(10);
/// A synchronous invocation's payload, each way ("For synchronous
/// invocations, the maximum payload size is 6 MB").
pub const MAX_SYNC_PAYLOAD: usize = 6_000_000;
/// The account's concurrency ("Lambda quotas": "Concurrent executions | 1,000").
pub const ACCOUNT_CONCURRENCY: usize = 1_000;
/// What must stay unreserved (`PutFunctionConcurrency`: "leave at least 100
/// simultaneous executions unreserved").
pub const MIN_UNRESERVED: usize = 100;

/// The account's concurrency: what every function without a reservation
/// shares, after the reservations are set aside.
pub struct Concurrency {
    pub account: usize,
    unreserved: usize,
    in_flight: std::sync::atomic::AtomicUsize,
}

impl Concurrency {
    /// The account's pool with `reserved` set aside, or the error Lambda
    /// gives when the reservations leave less than 100 unreserved.
    pub fn new(account: usize, reserved: usize) -> Result<Arc<Self>, ReservationError> {
        let unreserved = account
            .checked_sub(reserved)
            .filter(|u| *u >= MIN_UNRESERVED)
            .ok_or(ReservationError::BelowMinimum { account, reserved })?;
        Ok(Arc::new(Self { account, unreserved, in_flight: Default::default() }))
    }
    /// What functions without a reservation share.
    pub fn unreserved(&self) -> usize {
        self.unreserved
    }
}

/// Reservations the account's concurrency cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    /// Lambda's error when the reservations leave less than
    /// [`MIN_UNRESERVED`] unreserved.
    #[error(
        "InvalidParameterValueException: reserved concurrency {reserved} decreases the account's \
         UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}] \
         (account concurrency {account}; see --account-concurrency)"
    )]
    BelowMinimum { account: usize, reserved: usize },
}

/// Why a process did not finish its init.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitFailure {
    #[error("exited during init ({0})")]
    Exited(String),
    #[error("lost during init: {0}")]
    Lost(String),
    #[error("init did not finish within {0:?}")]
    TimedOut(Duration),
}

/// Why a function's process did not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Its Runtime API could not listen.
    #[error("bind: {0}")]
    Bind(std::io::Error),
    #[error("{0}")]
    Addr(std::io::Error),
    /// Its bootstrap could not be started.
    #[error("{function}: cannot start {}: {source}", bootstrap.display())]
    Spawn { function: String, bootstrap: PathBuf, source: std::io::Error },
    /// It started and failed its init: why, the init error it reported (if
    /// any) and the last lines it wrote.
    #[error(
        "{function} failed its init: {why}{}{}",
        init_error.as_ref().map(|o| format!("; init error {o}")).unwrap_or_default(),
        if wrote.is_empty() { String::new() } else { format!("; it wrote:\n  {}", wrote.join("\n  ")) }
    )]
    Failed { function: String, why: InitFailure, init_error: Option<String>, wrote: Vec<String> },
}

/// One invocation's place under its concurrency limit, given back when dropped.
struct Slot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn take_slot(n: &std::sync::atomic::AtomicUsize, max: usize) -> Option<Slot<'_>> {
    use std::sync::atomic::Ordering;
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| (v < max).then_some(v + 1)).ok().map(|_| Slot(n))
}

#[derive(Debug)]
pub enum InvokeError {
    /// The function returned an error (`/error`): its JSON.
    Function(Value),
    /// The process ran past the function's timeout and was killed.
    Timeout(Duration),
    /// The process exited, or failed its init, during the invocation.
    Exited(String),
    /// Past the function's concurrency (reserved, or the account's unreserved
    /// pool): Lambda's 429 `TooManyRequestsException`, with its reason.
    Throttled(&'static str),
    /// The request payload is over 6 MB: 413 `RequestEntityTooLargeException`.
    RequestTooLarge(usize),
    /// The function's answer is over 6 MB: `Function.ResponseSizeTooLarge`.
    ResponseTooLarge(usize),
}

impl InvokeError {
    pub fn throttled(&self) -> bool {
        matches!(self, InvokeError::Throttled(_))
    }
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvokeError::Function(v) => write!(f, "function error: {v}"),
            InvokeError::Timeout(d) => write!(f, "Task timed out after {:.2} seconds", d.as_secs_f64()),
            InvokeError::Exited(why) => write!(f, "Runtime.ExitError: {why}"),
            InvokeError::Throttled(reason) => write!(f, "TooManyRequestsException: Rate Exceeded. (Reason: {reason})"),
            InvokeError::RequestTooLarge(n) => write!(
                f,
                "RequestEntityTooLargeException: {n} byte payload is too large for the RequestResponse invocation type ({MAX_SYNC_PAYLOAD} byte limit)"
            ),
            InvokeError::ResponseTooLarge(n) => write!(
                f,
                "Function.ResponseSizeTooLarge: Response payload size ({n} bytes) exceeded maximum allowed payload size ({MAX_SYNC_PAYLOAD} bytes)."
            ),
        }
    }
}

struct Invocation {
    id: String,
    payload: Bytes,
    deadline_ms: u64,
    reply: oneshot::Sender<Result<Bytes, Value>>,
}

/// What one process's Runtime API holds.
struct ApiState {
    next: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Bytes, Value>>>>,
    arn: String,
    ready: Notify,
    is_ready: std::sync::atomic::AtomicBool,
    init_error: Mutex<Option<Value>>,
}

/// Live processes by their access key id: (function logical id, pid).
static CALLERS: std::sync::LazyLock<Mutex<HashMap<String, (String, u32)>>> = std::sync::LazyLock::new(Mutex::default);

/// The function whose process signs with `access_key`, if it is alive.
pub fn caller_of(access_key: &str) -> Option<String> {
    CALLERS.lock().unwrap().get(access_key).map(|(f, _)| f.clone())
}

/// Kills (SIGKILL) the process that signs with `access_key`, as a crash
/// would end it mid-invocation; its function's name if there was one.
pub fn kill_caller(access_key: &str) -> Option<String> {
    let (function, pid) = CALLERS.lock().unwrap().remove(access_key)?;
    // SAFETY: kill(2) with a pid this emulator started and has not reaped
    // (the Child is alive in its Proc until the run sees it exit).
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    (r == 0).then_some(function)
}

struct Proc {
    tx: mpsc::Sender<Invocation>,
    /// Its access key id (in [`CALLERS`] while it lives).
    key: String,
    child: tokio::sync::Mutex<tokio::process::Child>,
    /// The last lines it wrote (for an init error's message).
    tail: Arc<Mutex<VecDeque<String>>>,
    server: tokio::task::JoinHandle<()>,
}

// The child is `kill_on_drop`: dropping a process ends it.
impl Drop for Proc {
    fn drop(&mut self) {
        CALLERS.lock().unwrap().remove(&self.key);
        crate::iam::forget(&self.key);
        self.server.abort();
    }
}

pub struct Function {
    pub spec: FunctionSpec,
    idle: Mutex<Vec<Arc<Proc>>>,
    alive: Mutex<usize>,
    freed: Notify,
    pool: Arc<Concurrency>,
    /// Invocations in flight (against a reservation, when there is one).
    in_flight: std::sync::atomic::AtomicUsize,
    usage: Arc<crate::bill::FunctionUse>,
    /// The next invocations to throttle whatever the concurrency (tests:
    /// `POST /__emulate/faults`).
    forced_throttles: std::sync::atomic::AtomicU32,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

async fn next(State(api): State<Arc<ApiState>>) -> Response {
    if !api.is_ready.swap(true, std::sync::atomic::Ordering::SeqCst) {
        api.ready.notify_waiters();
    }
    let inv = { api.next.lock().await.recv().await };
    let Some(inv) = inv else {
        // The process is being retired (and killed): an answer without an
        // invocation would only make the runtime panic on its way out.
        return std::future::pending().await;
    };
    api.pending.lock().unwrap().insert(inv.id.clone(), inv.reply);
    let trace = format!("Root=1-{:08x}-{};Sampled=0", now_ms() / 1000, &request_id().replace('-', "")[..24]);
    (
        [
            ("lambda-runtime-aws-request-id", inv.id.as_str()),
            ("lambda-runtime-deadline-ms", &inv.deadline_ms.to_string()),
            ("lambda-runtime-invoked-function-arn", api.arn.as_str()),
            ("lambda-runtime-trace-id", trace.as_str()),
            ("content-type", "application/json"),
        ],
        inv.payload,
    )
        .into_response()
}

/// Hands an invocation's outcome to the invoker waiting for it.
fn settle(api: &ApiState, id: &str, outcome: Result<Bytes, Value>) -> Response {
    match api.pending.lock().unwrap().remove(id) {
        Some(tx) => {
            let _late = tx.send(outcome);
            (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
        }
        None => {
            (StatusCode::BAD_REQUEST, r#"{"errorMessage":"unknown request id","errorType":"InvalidRequestID"}"#).into_response()
        }
    }
}

fn error_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| json!({"errorMessage": String::from_utf8_lossy(body)}))
}

async fn respond(State(api): State<Arc<ApiState>>, Path(id): Path<String>, body: Bytes) -> Response {
    settle(&api, &id, Ok(body))
}

async fn error(State(api): State<Arc<ApiState>>, Path(id): Path<String>, body: Bytes) -> Response {
    settle(&api, &id, Err(error_json(&body)))
}

async fn init_error(State(api): State<Arc<ApiState>>, body: Bytes) -> Response {
    *api.init_error.lock().unwrap() = Some(error_json(&body));
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

impl Function {
    /// A function alone in an account of its own (benchmarks, tests).
    pub fn new(spec: FunctionSpec) -> Arc<Self> {
        let pool =
            Concurrency::new(ACCOUNT_CONCURRENCY, spec.reserved.unwrap_or(0)).expect("a reservation that fits the account");
        Self::in_account(spec, pool, Default::default())
    }

    /// A function of the account whose concurrency is `pool`, billed to `usage`.
    pub fn in_account(spec: FunctionSpec, pool: Arc<Concurrency>, usage: Arc<crate::bill::FunctionUse>) -> Arc<Self> {
        Arc::new(Self {
            spec,
            idle: Mutex::default(),
            alive: Mutex::new(0),
            freed: Notify::new(),
            pool,
            in_flight: Default::default(),
            usage,
            forced_throttles: Default::default(),
        })
    }

    /// Throttles the next `n` invocations, as Lambda does at its limit.
    pub fn throttle_next(&self, n: u32) {
        self.forced_throttles.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Invocations in flight now.
    pub fn in_flight(&self) -> usize {
        match self.spec.reserved {
            Some(_) => self.in_flight.load(std::sync::atomic::Ordering::Acquire),
            None => self.pool.in_flight.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// A place under the function's concurrency, or Lambda's throttle.
    fn admit(&self) -> Result<Slot<'_>, InvokeError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.forced_throttles.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(InvokeError::Throttled("ReservedFunctionConcurrentInvocationLimitExceeded"));
        }
        match self.spec.reserved {
            Some(r) => {
                take_slot(&self.in_flight, r).ok_or(InvokeError::Throttled("ReservedFunctionConcurrentInvocationLimitExceeded"))
            }
            None => take_slot(&self.pool.in_flight, self.pool.unreserved)
                .ok_or(InvokeError::Throttled("ConcurrentInvocationLimitExceeded")),
        }
    }

    /// Starts one process and waits through its init (at most `limit`):
    /// `Ok` once it asks for its first event, else the function's own init error.
    async fn cold_start(self: &Arc<Self>, limit: Duration) -> Result<Arc<Proc>, InitError> {
        let spec = &self.spec;
        let (tx, rx) = mpsc::channel(1);
        let api = Arc::new(ApiState {
            next: tokio::sync::Mutex::new(rx),
            pending: Mutex::default(),
            arn: spec.arn.clone(),
            ready: Notify::new(),
            is_ready: false.into(),
            init_error: Mutex::default(),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(respond))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            // Lambda's own limit is checked on what arrives (ResponseTooLarge);
            // the server must not refuse it first at axum's 2 MB default.
            .layer(axum::extract::DefaultBodyLimit::max(4 * MAX_SYNC_PAYLOAD))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(InitError::Bind)?;
        let addr = listener.local_addr().map_err(InitError::Addr)?;
        let server = tokio::spawn(async move {
            let _stopped = axum::serve(listener, app).await;
        });
        let dir = spec.bootstrap.parent().map(PathBuf::from).unwrap_or_default();
        let key = format!("ASIAEMU{:013X}", rand::random::<u64>() >> 12);
        let mut cmd = tokio::process::Command::new(&spec.bootstrap);
        cmd.env_clear()
            .current_dir(&dir)
            .envs(spec.env.iter().cloned())
            .env("AWS_ACCESS_KEY_ID", &key)
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("LAMBDA_TASK_ROOT", &dir)
            .env("_HANDLER", "bootstrap")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| InitError::Spawn {
            function: spec.logical.clone(),
            bootstrap: spec.bootstrap.clone(),
            source,
        })?;
        if let Some(pid) = child.id() {
            CALLERS.lock().unwrap().insert(key.clone(), (spec.logical.clone(), pid));
        }
        if let Some(policy) = &spec.policy {
            crate::iam::register(&key, policy.clone());
        }
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        for pipe in [child.stdout.take().map(Either::Out), child.stderr.take().map(Either::Err)] {
            let Some(pipe) = pipe else { continue };
            let (tail, name) = (tail.clone(), spec.logical.clone());
            tokio::spawn(async move {
                let mut lines = match pipe {
                    Either::Out(o) => Box::pin(BufReader::new(o)) as std::pin::Pin<Box<dyn tokio::io::AsyncBufRead + Send>>,
                    Either::Err(e) => Box::pin(BufReader::new(e)),
                }
                .lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("{name} | {line}");
                    let mut t = tail.lock().unwrap();
                    if t.len() == 20 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        let outcome = {
            let ready = api.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if api.is_ready.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                tokio::select! {
                    _ = &mut ready => Ok(()),
                    status = child.wait() => Err(match status {
                        Ok(s) => InitFailure::Exited(s.to_string()),
                        Err(e) => InitFailure::Lost(e.to_string()),
                    }),
                    _ = tokio::time::sleep(limit) => Err(InitFailure::TimedOut(limit)),
                }
            }
        };
        if let Err(why) = outcome {
            CALLERS.lock().unwrap().remove(&key);
            crate::iam::forget(&key);
            let _gone = child.start_kill();
            // The pipes drain after the exit: give the last lines a moment.
            tokio::time::sleep(Duration::from_millis(50)).await;
            server.abort();
            let own = api.init_error.lock().unwrap().clone().map(|v| v.to_string());
            let lines: Vec<String> = tail.lock().unwrap().iter().cloned().collect();
            return Err(InitError::Failed { function: spec.logical.clone(), why, init_error: own, wrote: lines });
        }
        Ok(Arc::new(Proc { tx, key, child: tokio::sync::Mutex::new(child), tail, server }))
    }

    /// Starts one process (the stack is ready when every function has one).
    pub async fn warm(self: &Arc<Self>) -> Result<(), InitError> {
        *self.alive.lock().unwrap() += 1;
        match self.cold_start(self.spec.init_timeout).await {
            Ok(p) => {
                self.idle.lock().unwrap().push(p);
                Ok(())
            }
            Err(e) => {
                *self.alive.lock().unwrap() -= 1;
                Err(e)
            }
        }
    }

    /// An idle process, or a new one (and how long its init took, which is billed).
    async fn take(self: &Arc<Self>, deadline: tokio::time::Instant) -> Result<(Arc<Proc>, Duration), InvokeError> {
        loop {
            let freed = self.freed.notified();
            if let Some(p) = self.idle.lock().unwrap().pop() {
                return Ok((p, Duration::ZERO));
            }
            let spawn = {
                let mut alive = self.alive.lock().unwrap();
                if *alive < self.spec.concurrency {
                    *alive += 1;
                    true
                } else {
                    false
                }
            };
            if spawn {
                let started = tokio::time::Instant::now();
                // Lambda gives the init 10 s, then tries it again within the
                // invocation's own timeout.
                let first = self.cold_start(self.spec.init_timeout).await;
                let outcome = match first {
                    Err(InitError::Failed { why: InitFailure::TimedOut(_), .. }) => {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        tracing::warn!(function = %self.spec.logical, "init ran over {:?}: tried again within the invocation's timeout", self.spec.init_timeout);
                        self.cold_start(left).await
                    }
                    other => other,
                };
                return outcome.map(|p| (p, started.elapsed())).map_err(|e| {
                    *self.alive.lock().unwrap() -= 1;
                    self.freed.notify_one();
                    InvokeError::Exited(e.to_string())
                });
            }
            freed.await;
        }
    }

    fn retire(&self) {
        *self.alive.lock().unwrap() -= 1;
        self.freed.notify_one();
    }

    /// One invocation, as Lambda runs it.
    pub async fn invoke(self: &Arc<Self>, payload: Bytes) -> Result<Bytes, InvokeError> {
        use crate::bill::Meter;
        if payload.len() > MAX_SYNC_PAYLOAD {
            return Err(InvokeError::RequestTooLarge(payload.len()));
        }
        let _slot = match self.admit() {
            Ok(slot) => slot,
            Err(throttled) => {
                Meter::add(&self.usage.throttled, 1);
                return Err(throttled);
            }
        };
        Meter::add(&self.usage.invocations, 1);
        let timeout = self.spec.timeout;
        let (proc, init) = self.take(tokio::time::Instant::now() + timeout).await?;
        let started = std::time::Instant::now();
        let outcome = self.run(proc, payload, timeout).await;
        let billed_ms = (init + started.elapsed()).as_micros().div_ceil(1000) as u64;
        Meter::add(&self.usage.mb_ms, billed_ms * u64::from(self.spec.memory_mb));
        if matches!(outcome, Err(InvokeError::Timeout(_))) {
            Meter::add(&self.usage.timeouts, 1);
        }
        match outcome {
            Ok(body) if body.len() > MAX_SYNC_PAYLOAD => Err(InvokeError::ResponseTooLarge(body.len())),
            other => other,
        }
    }

    async fn run(self: &Arc<Self>, proc: Arc<Proc>, payload: Bytes, timeout: Duration) -> Result<Bytes, InvokeError> {
        let (reply, rx) = oneshot::channel();
        let inv = Invocation { id: request_id(), payload, deadline_ms: now_ms() + timeout.as_millis() as u64, reply };
        if proc.tx.send(inv).await.is_err() {
            self.retire();
            return Err(InvokeError::Exited("the runtime stopped asking for events".into()));
        }
        let outcome = {
            let mut child = proc.child.lock().await;
            tokio::select! {
                r = rx => match r {
                    Ok(Ok(body)) => Ok(body),
                    Ok(Err(v)) => Err(InvokeError::Function(v)),
                    Err(_) => Err(InvokeError::Exited("no answer".into())),
                },
                status = child.wait() => Err(InvokeError::Exited(format!(
                    "the process exited during the invocation ({}); it wrote: {}",
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    proc.tail.lock().unwrap().iter().cloned().collect::<Vec<_>>().join(" / ")
                ))),
                _ = tokio::time::sleep(timeout) => {
                    let _killed = child.start_kill();
                    Err(InvokeError::Timeout(timeout))
                }
            }
        };
        match &outcome {
            // A function error leaves the runtime running: it asks for the next event.
            Ok(_) | Err(InvokeError::Function(_)) => {
                self.idle.lock().unwrap().push(proc);
                self.freed.notify_one();
            }
            Err(_) => {
                drop(proc);
                self.retire();
            }
        }
        outcome
    }

    /// Ends every process (at shutdown).
    pub fn stop(&self) {
        self.idle.lock().unwrap().clear();
    }
}

enum Either {
    Out(tokio::process::ChildStdout),
    Err(tokio::process::ChildStderr),
}
