//! hookcast on AWS: the DynamoDB store and API Gateway gateway adapters, the
//! Lambda configuration, and the handlers the Lambda mains call.

pub mod apigw;
mod attr;
mod commit;
pub mod dynamo;
pub mod edge;
pub mod emf;
pub mod env;
pub mod event_item;
pub mod guard;
pub mod handlers;
pub mod pipeline;

use std::sync::Arc;

use hookcast_core::ports::Retention;
use hookcast_core::{Fanout, Relay};

/// The table is both the event log and the subscriptions.
pub type AwsRelay = Relay<dynamo::DynamoStore, dynamo::DynamoStore, apigw::ApiGwGateway>;
pub type AwsFanout = Fanout<dynamo::DynamoStore, apigw::ApiGwGateway>;
pub type AwsHooks = hookcast_core::Hooks<dynamo::DynamoStore>;

/// Sleeps before retry `attempt`: hookcast_core's capped full-jitter backoff.
pub(crate) async fn backoff_sleep(attempt: u32, base: std::time::Duration, cap: std::time::Duration) {
    tokio::time::sleep(hookcast_core::backoff::full_jitter(attempt, base, cap, rand::random())).await;
}

/// A socket function's parts, built once per cold start.
pub struct Socket {
    pub relay: AwsRelay,
    pub guard: guard::TableGuard,
    pub gateway: Arc<apigw::ApiGwGateway>,
    pub store: Arc<dynamo::DynamoStore>,
    /// The edge option's origin secret ([`edge`]), for `$connect`.
    pub edge_secret: Option<String>,
}

/// Why a cold start stopped: the function's log says it, whole, once.
#[derive(thiserror::Error)]
pub enum StartupError {
    #[error("cannot read the secrets {arn}: {detail}")]
    SecretsUnreadable { arn: String, detail: String },
    #[error("the secret {arn} must be a JSON object of source name to secret")]
    SecretsNotAnObject { arn: String },
    #[error("cannot read {path}: {detail}")]
    ConfigUnreadable { path: String, detail: String },
    #[error(transparent)]
    Config(#[from] hookcast_core::ConfigError),
}

/// As its message: a `main` that returns it prints it with `{:?}`, and the
/// log should read as the message, not as the enum.
impl std::fmt::Debug for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// What a function builds once per cold start.
pub struct Startup {
    pub cfg: env::LambdaConfig,
    pub sdk: aws_config::SdkConfig,
}

impl Startup {
    /// Typed config from the environment (every problem listed at once) and
    /// the SDK config. The webhook function also reads its sources' secrets
    /// from Secrets Manager (`HOOKCAST_SECRETS_ARN`: a JSON object of source
    /// name → secret), so no secret sits in a Lambda environment variable.
    pub async fn load(role: env::Role) -> Result<Self, StartupError> {
        let sdk = aws_config::load_from_env().await;
        // Comma-separated: the webhook function reads the webhook secrets and
        // the subscribe secret, the message function the subscribe secret only.
        let mut secrets = std::collections::HashMap::new();
        let arns = std::env::var("HOOKCAST_SECRETS_ARN").unwrap_or_default();
        if matches!(role, env::Role::Webhook | env::Role::Message) {
            for arn in arns.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                for (k, v) in fetch_secrets(&sdk, arn).await? {
                    // An empty value is no value: a later secret fills what an
                    // earlier one left empty. The stack's own settings (its
                    // "@" keys, read first) are never taken over by a secret
                    // a user fills; a source's secret in a later one wins.
                    let setting = !k.starts_with("HOOKCAST_SECRET_");
                    if v.is_empty() || (setting && secrets.contains_key(&k)) {
                        continue;
                    }
                    secrets.insert(k, v);
                }
            }
        }
        let config_file = read_config_layer()?;
        let lookup = |k: &str| match k {
            env::CONFIG_FILE_KEY => config_file.clone(),
            _ => secrets.get(k).cloned().or_else(|| std::env::var(k).ok()),
        };
        let cfg = env::LambdaConfig::from_env(&lookup, role)?;
        Ok(Self { cfg, sdk })
    }
    pub fn store(&self) -> dynamo::DynamoStore {
        // A partition over its capacity answers with a throttling error: the
        // SDK tries again with jittered backoff (6 tries, 50 ms doubling to
        // 1 s: under 2 s of waiting, well inside every function's timeout).
        let retry = aws_sdk_dynamodb::config::retry::RetryConfig::standard()
            .with_max_attempts(6)
            .with_initial_backoff(std::time::Duration::from_millis(50))
            .with_max_backoff(std::time::Duration::from_secs(1));
        let conf = aws_sdk_dynamodb::config::Builder::from(&self.sdk).retry_config(retry).build();
        dynamo::DynamoStore::new(
            aws_sdk_dynamodb::Client::from_conf(conf),
            &self.cfg.table,
            Retention::from(&self.cfg.core.limits),
        )
        .with_shards(self.cfg.shards)
    }
    /// The webhook path. Where the fan-out queue is known, each commit
    /// enqueues its events' jobs itself (the fast path to the pages); the
    /// table's stream stays the backstop for a function that dies between
    /// its commit and the enqueue (SQS drops the second copy of a job).
    pub fn hooks(&self) -> AwsHooks {
        let mut store = self.store();
        if !self.cfg.queue_url.is_empty() {
            let queue = Arc::new(self.queue());
            let shards = self.cfg.shards;
            store = store.with_on_commit(Arc::new(move |events| {
                let queue = queue.clone();
                Box::pin(async move {
                    let jobs = pipeline::jobs_for(events, shards);
                    if let Err(e) = pipeline::JobQueue::enqueue(&*queue, &jobs).await {
                        tracing::warn!(error = %e, jobs = jobs.len(), "could not enqueue a commit's fan-out; the stream delivers it");
                    }
                })
            }));
        }
        hookcast_core::Hooks::new(Arc::new(self.cfg.core.clone()), Arc::new(store))
    }
    fn gateway(&self) -> Arc<apigw::ApiGwGateway> {
        Arc::new(apigw::ApiGwGateway::new(&self.sdk, &self.cfg.ws_endpoint).with_rate(self.cfg.posts_per_second))
    }
    pub fn relay(&self) -> AwsRelay {
        self.socket().relay
    }
    /// What a socket function needs: the relay, and the parts it is made of
    /// (replies are posted by the handler, after the connection's budget).
    pub fn socket(&self) -> Socket {
        let store = Arc::new(self.store());
        let gateway = self.gateway();
        let relay = Relay::new(Arc::new(self.cfg.core.clone()), store.clone(), store.clone(), gateway.clone()).only_reachable();
        let guard = guard::TableGuard::new(aws_sdk_dynamodb::Client::new(&self.sdk), &self.cfg.table);
        Socket { relay, guard, gateway, store, edge_secret: self.cfg.edge_secret.clone() }
    }
    /// The fan-out, and the table that keeps where an unfinished job stopped.
    pub fn fanout(&self) -> (AwsFanout, Arc<dynamo::DynamoStore>) {
        self.fanout_paced().0
    }
    /// The fan-out, its cursors, and its posts' pacer (at the worker's own rate).
    pub fn fanout_paced(&self) -> ((AwsFanout, Arc<dynamo::DynamoStore>), Arc<apigw::Pacer>) {
        let store = Arc::new(self.store());
        let gateway = self.gateway();
        let pacer = gateway.pacer().expect("the fan-out's gateway has a rate");
        ((Fanout::new(Arc::new(self.cfg.core.clone()), store.clone(), gateway), store), pacer)
    }
    /// The workers posting now, for the fan-out's whole share.
    pub fn share(&self) -> pipeline::Share {
        pipeline::Share::new(self.store().client().clone(), &self.cfg.table, self.cfg.posts_per_second, self.cfg.fanout_workers)
    }
    pub fn queue(&self) -> pipeline::SqsQueue {
        pipeline::SqsQueue::new(aws_sdk_sqs::Client::new(&self.sdk), &self.cfg.queue_url)
    }
}

/// A delivery to a source whose secret the stack's secrets do not hold yet
/// ([`env::LambdaConfig::unready`]): 503 with where the secret goes, and
/// `Retry-After`, so the sender tries again; `None` for every other request.
pub fn unready_refusal(unready: &std::collections::BTreeMap<String, String>, path: &str) -> Option<(u16, String)> {
    let source = path.strip_prefix("/hooks/")?;
    let why = unready.get(source)?;
    let message = format!("{why}; an instance that started before it was put there answers this until it restarts");
    Some((503, serde_json::json!({"error": "source_not_ready", "message": message}).to_string()))
}

/// The config layer's `hookcast.toml`, if the function has the layer. Lambda
/// extracts layers into /opt; `hookcast emulate` runs functions as local
/// processes, which share one /opt, and names the directory that stands for
/// it in `HOOKCAST_OPT_DIR`.
fn read_config_layer() -> Result<Option<String>, StartupError> {
    let dir = std::env::var("HOOKCAST_OPT_DIR").unwrap_or_else(|_| env::CONFIG_DIR.to_owned());
    let path = std::path::Path::new(&dir).join("hookcast.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StartupError::ConfigUnreadable { path: path.display().to_string(), detail: e.to_string() }),
    }
}

/// The secret JSON, as `HOOKCAST_SECRET_<SOURCE>` lookups.
async fn fetch_secrets(
    sdk: &aws_config::SdkConfig,
    arn: &str,
) -> Result<std::collections::HashMap<String, String>, StartupError> {
    let out = aws_sdk_secretsmanager::Client::new(sdk).get_secret_value().secret_id(arn).send().await.map_err(|e| {
        StartupError::SecretsUnreadable {
            arn: arn.to_owned(),
            detail: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
        }
    })?;
    let text = out.secret_string().unwrap_or_default();
    let map: std::collections::BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|_| StartupError::SecretsNotAnObject { arn: arn.to_owned() })?;
    Ok(map.into_iter().map(|(k, v)| (secret_key_env(&k), v)).collect())
}

/// `@subscribe` is the private channels' key; any other key names a source.
fn secret_key_env(key: &str) -> String {
    match key {
        "@subscribe" => hookcast_core::config::PRIVATE_SECRET_ENV.to_owned(),
        // Not a secret: the fan-out queue, for the webhook function's fast
        // path, travels in the stack's settings it reads at a cold start
        // (its environment is at Lambda's 4 KB limit).
        "@queue" => "HOOKCAST_QUEUE_URL".to_owned(),
        // The edge option's origin secret (CloudFront's custom header).
        "@edge" => "HOOKCAST_EDGE_SECRET".to_owned(),
        source => hookcast_core::config::secret_env_name(source),
    }
}

/// Plain-text logs for CloudWatch (it adds the timestamps).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
}

/// The whole life of a WebSocket route's Lambda: tracing, config, clients
/// once per cold start, then `handler` per event. `role`: `Connection` for
/// `$connect` and `$disconnect`, `Message` for the rest.
pub async fn run_websocket_function<F, Fut>(role: env::Role, handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(std::sync::Arc<Socket>, aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest) -> Fut,
    Fut: std::future::Future<Output = aws_lambda_events::apigw::ApiGatewayProxyResponse> + Send,
{
    init_tracing();
    let socket = std::sync::Arc::new(Startup::load(role).await?.socket());
    let handler = &handler;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |ev: lambda_runtime::LambdaEvent<aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest>| {
            // Boxed: the handler futures nest deep enough to overflow layout queries.
            let fut = Box::pin(handler(socket.clone(), ev.payload));
            async move { Ok::<_, lambda_runtime::Error>(fut.await) }
        },
    ))
    .await
}

/// The dispatcher Lambda: DynamoDB stream batches of new event items → SQS FIFO jobs.
pub async fn run_dispatch_function() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let startup = Startup::load(env::Role::Dispatch).await?;
    let (queue, shards) = (std::sync::Arc::new(startup.queue()), startup.cfg.shards);
    let log = std::sync::Arc::new(startup.store());
    lambda_runtime::run(lambda_runtime::service_fn(move |ev: lambda_runtime::LambdaEvent<aws_lambda_events::dynamodb::Event>| {
        let (queue, log) = (queue.clone(), log.clone());
        async move {
            // An error fails the batch: Lambda retries it in order, then sends
            // it to the on-failure destination.
            pipeline::dispatch(&*queue, &*log, shards, &ev.payload).await.map(|_| ()).map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}

/// Kept back before the fan-out function's deadline: the posts in flight when
/// the budget runs out (none starts or retries after it), the gone
/// connections' clean-up and the cursor.
pub const FANOUT_RESERVE: std::time::Duration = std::time::Duration::from_secs(10);

/// The fan-out worker Lambda: SQS FIFO batches → PostToConnection, partial batch failures.
pub async fn run_fanout_function() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let startup = Startup::load(env::Role::Fanout).await?;
    let ((fanout, cursors), pacer) = startup.fanout_paced();
    let rate = startup.cfg.posts_per_second;
    let state = Arc::new((fanout, cursors, startup.queue(), startup.share(), pacer));
    lambda_runtime::run(lambda_runtime::service_fn(move |ev: lambda_runtime::LambdaEvent<aws_lambda_events::sqs::SqsEvent>| {
        let state = state.clone();
        async move {
            // No page is started within FANOUT_RESERVE of the deadline: what
            // is left goes back to the queue, to resume where it stopped.
            let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let left = std::time::Duration::from_millis(ev.context.deadline.saturating_sub(now_ms));
            let until = std::time::Instant::now() + left.saturating_sub(FANOUT_RESERVE.min(left / 2));
            let budget = pipeline::Budget { until, posts_per_second: Some(rate) };
            let batch = pipeline::fan_out_batch(&state.0, &*state.1, &state.2, &ev.payload, Some(budget));
            let result = Box::pin(state.3.while_posting(&state.4, batch)).await;
            emf::flush();
            Ok::<_, lambda_runtime::Error>(result)
        }
    }))
    .await
}
