//! `hookcast emulate`'s flags.

use std::path::PathBuf;
use std::time::Duration;

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
    /// The site's configuration in place of the hookcast.toml its config
    /// layer ships (as if the layer's config/hookcast.toml were this file).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A value put into one of the template's secrets before any function
    /// starts, as `aws secretsmanager put-secret-value` would after a
    /// deploy: `LogicalId=FILE` (e.g. `SenderSecrets=secrets.json`, from
    /// `hookcast secrets`). Repeatable.
    #[arg(long, value_name = "ID=FILE")]
    pub put_secret: Vec<String>,
    /// Processes per function at most (below its reserved concurrency).
    #[arg(long, default_value_t = 64)]
    pub max_processes: usize,
}
