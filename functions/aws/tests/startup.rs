//! A cold start as on Lambda: `Startup::load` reads the configuration from the
//! environment and the secrets from Secrets Manager (moto's, over the real
//! SDK), the subscribe secret under its `@subscribe` key. Its own test binary:
//! it sets process environment variables.

mod common;

use hookcast_aws::{env::Role, Startup};
use hookcast_core::config::SourceKind;

#[tokio::test]
async fn a_cold_start_reads_sources_and_the_subscribe_secret_from_secrets_manager() {
    let endpoint = common::endpoint();
    let sm = aws_sdk_secretsmanager::Client::new(&common::sdk_config(Some(endpoint.clone())));
    let name = format!("hookcast-startup-{}", std::process::id());
    let hooks = sm
        .create_secret()
        .name(format!("{name}-hooks"))
        .secret_string(r#"{"netlify":"netlify-secret-from-sm-0123","zapier":"zapier-token-from-sm-0123"}"#)
        .send()
        .await
        .unwrap();
    let subscribe = sm
        .create_secret()
        .name(format!("{name}-subscribe"))
        .secret_string(r#"{"@subscribe":"subscribe-secret-from-sm-0123"}"#)
        .send()
        .await
        .unwrap();
    // SenderSecretsName: a secret the user made, named (not an ARN) in the stack's parameter.
    let senders = format!("{name}-senders");
    sm.create_secret()
        .name(&senders)
        .secret_string(r#"{"github":"github-secret-from-sm-0123","clerk":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}"#)
        .send()
        .await
        .unwrap();
    // The stack's config layer, as Lambda extracts it (here in the directory
    // HOOKCAST_OPT_DIR names): the repository's config/hookcast.toml
    // (netlify and zapier, secret_env for the laptop), and two sender kinds.
    let repo_config = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/hookcast.toml")).unwrap();
    let config = format!(
        "{repo_config}[sources.github]\nkind = \"github\"\nchannel = \"releases\"\n[sources.clerk]\nkind = \"svix\"\n\
         [private]\nchannels = [\"orders/*\"]\n"
    );
    let opt = tempfile::tempdir().unwrap();
    std::fs::write(opt.path().join("hookcast.toml"), &config).unwrap();
    for (k, v) in [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("HOOKCAST_TABLE", "t"),
        ("HOOKCAST_WS_ENDPOINT", "https://abc.execute-api.us-east-1.amazonaws.com/live"),
        ("HOOKCAST_OPT_DIR", opt.path().to_str().unwrap()),
        ("HOOKCAST_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q.fifo"),
    ] {
        // SAFETY: this test binary has one test; nothing else reads the environment concurrently.
        unsafe { std::env::set_var(k, v) };
    }
    let arns = format!("{},{},{senders}", hooks.arn().unwrap(), subscribe.arn().unwrap());
    unsafe { std::env::set_var("HOOKCAST_SECRETS_ARN", &arns) };

    let webhook = Startup::load(Role::Webhook).await.unwrap();
    match &webhook.cfg.core.sources["zapier"].kind {
        SourceKind::Token { secret, .. } => assert_eq!(secret.expose(), b"zapier-token-from-sm-0123"),
        other => panic!("{other:?}"),
    }
    assert!(webhook.cfg.core.sources["zapier"].fields.as_ref().is_some_and(|f| !f.is_empty()), "the default names its fields");
    match &webhook.cfg.core.sources["github"].kind {
        SourceKind::Github { secret } => assert_eq!(secret.expose(), b"github-secret-from-sm-0123"),
        other => panic!("{other:?}"),
    }
    assert_eq!(webhook.cfg.core.sources["clerk"].kind_name(), "svix");
    let private = webhook.cfg.core.private.as_ref().expect("private channels configured");
    assert_eq!(private.secret.expose(), b"subscribe-secret-from-sm-0123");

    // The message function: only the subscribe secret's ARN.
    unsafe { std::env::set_var("HOOKCAST_SECRETS_ARN", subscribe.arn().unwrap()) };
    let socket = Startup::load(Role::Message).await.unwrap();
    assert_eq!(socket.cfg.core.private.unwrap().secret.expose(), b"subscribe-secret-from-sm-0123");

    // A [private] section without its secret stops the cold start with a clear reason.
    unsafe { std::env::set_var("HOOKCAST_SECRETS_ARN", "") };
    let err = Startup::load(Role::Message).await.err().expect("no subscribe secret").to_string();
    assert!(err.contains("HOOKCAST_SUBSCRIBE_SECRET"), "{err}");
    // The functions that never check tokens start without it, as the stack gives it to them.
    for role in [Role::Connection, Role::Dispatch, Role::Fanout] {
        let started = Startup::load(role).await.unwrap_or_else(|e| panic!("{role:?}: {e}"));
        assert!(started.cfg.core.private.is_none(), "{role:?}");
    }
}
