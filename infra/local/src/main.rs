use hookcast::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookcast::settings::{self, DevSecrets, Overrides};

#[derive(Parser)]
#[command(name = "hookcast", version, about = "Signed webhooks in, live static pages out")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log lines as text or as JSON objects (one per line, for log shippers).
    #[arg(long, global = true, value_enum, env = "HOOKCAST_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
struct ServeOpts {
    /// Address to listen on.
    #[arg(long, env = "HOOKCAST_BIND")]
    bind: Option<String>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "HOOKCAST_PORT")]
    port: Option<u16>,
    /// Where the event log lives.
    #[arg(long, env = "HOOKCAST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Serve HTTPS and WSS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "HOOKCAST_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, env = "HOOKCAST_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run locally with the demo site and generated dev secrets (or --config).
    Dev {
        #[command(flatten)]
        opts: ServeOpts,
        /// A TOML configuration instead of the generated dev sources.
        #[arg(long, env = "HOOKCAST_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a configured server (no demo site).
    Serve {
        #[command(flatten)]
        opts: ServeOpts,
        /// The TOML configuration: sources, allowed origins, limits (docs/configuration.md).
        #[arg(long, env = "HOOKCAST_CONFIG", default_value = "hookcast.toml")]
        config: PathBuf,
    },
    /// Sign and post a webhook exactly as its real sender would.
    Send(hookcast::send::SendArgs),
    /// Follow channels as a page does and print each event as a JSON line;
    /// with --until, exit 0 when that event arrives, 1 on timeout (for CI).
    Listen(hookcast::listen::ListenArgs),
    /// Run the AWS stack (template.yaml, after `sam build`) on this machine as
    /// AWS runs it: the built bootstraps behind a local Lambda Runtime API,
    /// API Gateway's WebSocket and HTTP APIs, the stream and queue event
    /// sources, moto behind a DynamoDB front that conflicts as DynamoDB does.
    Emulate(hookcast_emulate::stack::EmulateArgs),
    /// Check a hookcast.toml: as `serve` runs it, or with --aws as the AWS
    /// stack's functions will read it (its config layer), before `sam deploy`.
    Check {
        /// Check it for the AWS stack: no secret written in it, origins set;
        /// its secrets are the stack's (see `hookcast secrets`).
        #[arg(long)]
        aws: bool,
        #[arg(long, env = "HOOKCAST_CONFIG", default_value = "hookcast.toml")]
        config: PathBuf,
    },
    /// Print every source's secret, found as `serve` finds it (its
    /// secret_env, HOOKCAST_SECRET_<NAME>, or secret), as the JSON the AWS
    /// stack's SenderSecrets secret holds: hookcast secrets | aws secretsmanager
    /// put-secret-value --secret-id <SenderSecretsArn> --secret-string file:///dev/stdin.
    Secrets {
        #[arg(long, env = "HOOKCAST_CONFIG", default_value = "hookcast.toml")]
        config: PathBuf,
    },
    /// Mint a subscribe token for private channels (printed on stdout).
    Token {
        /// A channel or `prefix*` pattern the token lets its holder read. Repeatable.
        #[arg(long = "channel", required = true)]
        channels: Vec<String>,
        /// How long the token is valid, e.g. 15m, 12h, 30d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The config whose [private] secret signs the token (HOOKCAST_SUBSCRIBE_SECRET wins).
        #[arg(long, env = "HOOKCAST_CONFIG", default_value = "hookcast.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    hookcast::push::one_arena_per_core();
    let cli = Cli::parse();
    // One TLS provider for the process (wss:// in listen, https in send).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "hookcast=info,warn".into());
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => logs.json().with_current_span(false).init(),
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    // The runtime that answers HTTP; sockets and the fan-out run on their own (see `push`).
    let rt =
        match tokio::runtime::Builder::new_multi_thread().enable_all().on_thread_start(hookcast::push::answer_promptly).build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    if let Cmd::Listen(args) = &cli.cmd {
        let outcome = rt.block_on(async {
            let (mut out, mut log) = (std::io::stdout(), std::io::stderr());
            hookcast::listen::run(args, &mut out, &mut log).await
        });
        return match outcome {
            Ok(o) => {
                match &o {
                    hookcast::listen::Outcome::TimedOut(m) | hookcast::listen::Outcome::Refused(m) => eprintln!("error: {m}"),
                    hookcast::listen::Outcome::Done => {}
                }
                ExitCode::from(o.exit_code())
            }
            Err(msg) => {
                eprintln!("error: {msg}");
                ExitCode::from(2)
            }
        };
    }
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Dev { opts, config } => serve(opts, config, true).await,
            Cmd::Serve { opts, config } => serve(opts, Some(config), false).await,
            Cmd::Send(args) => hookcast::send::run(args).await.and_then(|ok| if ok { Ok(()) } else { Err(Error::Reported) }),
            Cmd::Token { channels, ttl, config } => token(&channels, &ttl, &config),
            Cmd::Check { aws, config } => hookcast::deploy::check(&config, aws).map(|ok| println!("{ok}")),
            Cmd::Secrets { config } => hookcast::deploy::secrets(&config).map(|json| println!("{json}")),
            Cmd::Emulate(args) => hookcast_emulate::stack::run(args).await.map_err(Error::from),
            Cmd::Listen(_) => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Reported) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(channels: &[String], ttl: &str, config: &std::path::Path) -> Result<(), Error> {
    use hookcast_core::config::PRIVATE_SECRET_ENV;
    use hookcast_core::token::{mint, Claims};
    let ttl = humantime::parse_duration(ttl).map_err(|e| Error::Usage(format!("--ttl {ttl:?}: {e} (try 15m, 12h or 30d)")))?;
    for c in channels {
        hookcast_core::channel::ChannelPattern::parse(c).map_err(|e| Error::Usage(format!("--channel {e}")))?;
    }
    let secret = match std::env::var(PRIVATE_SECRET_ENV).ok().filter(|s| !s.is_empty()) {
        Some(s) => s.into_bytes(),
        None => {
            let s = settings::load_file(config, &Overrides::default())?;
            let p = s.core.private.ok_or_else(|| {
                Error::Config(format!(
                    "{} has no [private] section; add one (secret, channels) or set {PRIVATE_SECRET_ENV}",
                    config.display()
                ))
            })?;
            p.secret.expose().to_vec()
        }
    };
    if secret.len() < hookcast_core::config::MIN_SECRET_BYTES {
        return Err(Error::Config(format!(
            "{PRIVATE_SECRET_ENV} is shorter than {} bytes",
            hookcast_core::config::MIN_SECRET_BYTES
        )));
    }
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| Error::Usage(e.to_string()))? + ttl;
    println!("{}", mint(&secret, &Claims { channels: channels.to_vec(), exp: exp.as_secs() as f64 }));
    eprintln!("valid until {} for {}", hookcast_core::clock::format_at(std::time::UNIX_EPOCH + exp), channels.join(", "));
    Ok(())
}

async fn serve(opts: ServeOpts, config: Option<PathBuf>, demo: bool) -> Result<(), Error> {
    let cli =
        Overrides { bind: opts.bind, port: opts.port, data_dir: opts.data_dir, tls_cert: opts.tls_cert, tls_key: opts.tls_key };
    let (settings, secrets) = match config {
        Some(path) => (settings::load_file(&path, &cli)?, None),
        None => {
            let data_dir = cli.data_dir.clone().unwrap_or_else(|| ".hookcast".into());
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| Error::DataDir(format!("cannot create {}: {e}", data_dir.display())))?;
            let secrets = DevSecrets::load_or_create(&data_dir)?;
            (settings::dev_settings(&secrets, &cli)?, Some(secrets))
        }
    };
    for warning in settings.core.warnings() {
        tracing::warn!("{warning}");
    }
    let state = hookcast::state(&settings, demo)?;
    let (addr, serving) = hookcast::bind(&settings, state.clone(), hookcast::shutdown_signal()).await?;
    print_banner(addr, &settings, secrets.as_ref(), demo);
    let served = serving.await.map_err(|e| Error::Serve(format!("server failed: {e}")));
    // The sockets run on the push runtime: let them send their 1012 (each
    // waits at most a second for its client) before the process ends.
    hookcast::released(&state, std::time::Duration::from_secs(2)).await;
    served
}

fn print_banner(addr: std::net::SocketAddr, s: &settings::Settings, secrets: Option<&DevSecrets>, demo: bool) {
    let host = if addr.ip().is_unspecified() { format!("127.0.0.1:{}", addr.port()) } else { addr.to_string() };
    let (scheme, ws) = if s.tls.is_some() { ("https", "wss") } else { ("http", "ws") };
    let http = format!("{scheme}://{host}");
    // The first line is stable: tests and scripts read the port from it.
    println!("hookcast listening on {http}");
    if demo {
        println!("  demo site   {http}/");
    }
    println!("  websocket   {ws}://{host}/ws");
    println!("  snippet     {http}/hookcast.js");
    println!("  history     {http}/channels/{{channel}}/events?since=N");
    println!("  data        {}", s.data_dir.join("hookcast.db").display());
    let origins = &s.core.allowed_origins;
    if origins.is_empty() || origins.iter().any(|o| o == "*") {
        println!("  origins     any (set allowed_origins to limit which sites may connect)");
    } else {
        println!("  origins     {}", origins.join(", "));
    }
    println!("  on a page   <script src=\"{http}/hookcast.js\" defer></script>");
    if s.core.sources.is_empty() {
        println!("  warning     no [sources.*] configured: every webhook will be 404 unknown_source");
    }
    for warning in s.core.warnings() {
        println!("  warning     {warning}");
    }
    println!("  webhooks:");
    for src in s.core.sources.values() {
        println!("    {http}/hooks/{:<10} ({})", src.name, src.kind_name());
    }
    if let Some(sec) = secrets {
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "hookcast".into());
        println!("  dev secrets (kept in {}):", s.data_dir.join("dev-secrets.json").display());
        println!("    netlify   JWS secret          {}", sec.netlify);
        println!("    zapier    x-hookcast-token    {}", sec.zapier);
        println!("    hmac      X-Hub-Signature-256 {}", sec.hmac);
        println!("    standard  webhook secret      {}", sec.standard);
        println!("    github, vercel, shopify, sanity, contentful: the hmac secret; stripe: whsec_ and the hmac secret;");
        println!("    svix: the standard one;");
        println!("    strapi: the zapier token (as Authorization: Bearer)");
        println!("  zapier, hmac and standard forward only the fields {}", settings::DEV_FIELDS.join(", "));
        println!();
        println!("Open {http}/ and, in another terminal, send a signed Netlify deploy notification:");
        println!("  {exe} send --url {http}/hooks/netlify --secret {} --deploy succeeded", sec.netlify);
        println!("or a guestbook entry:");
        println!(
            "  {exe} send --url {http}/hooks/netlify --secret {} --form guestbook --field name=Ada --field message=Hello",
            sec.netlify
        );
        println!("or a GitHub release as GitHub sends it (any sender kind alike; listen on channel github):");
        println!("  {exe} send --url {http}/hooks/github --kind github --secret {}", sec.hmac);
        println!("or a scoreboard merge patch (GitHub-style HMAC):");
        println!(
            "  {exe} send --url {http}/hooks/hmac --kind hmac --secret {} --channel scoreboard --event score --field home=2",
            sec.hmac
        );
    }
}
