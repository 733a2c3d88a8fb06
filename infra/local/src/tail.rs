//! `hookcast deliveries`: the delivery log read over HTTP from a running
//! server (this binary or the AWS stack), one entry per line as the
//! console's API gives it; with `--follow`, new entries as they come, like
//! `tail -f`.

use std::io::Write;
use std::time::Duration;

use hookcast_http::console::LIST_MAX;
use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;
use crate::settings::OPERATOR_TOKEN_ENV;

#[derive(Debug, clap::Args)]
pub struct DeliveriesArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8787
    #[arg(long)]
    pub url: String,
    /// The operator token (hookcast dev prints one; hookcast serve reads HOOKCAST_OPERATOR_TOKEN).
    #[arg(long, env = OPERATOR_TOKEN_ENV, hide_env_values = true)]
    pub token: String,
    /// Print the newest N entries first (1 to 200).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=LIST_MAX as i64))]
    pub limit: u16,
    /// Then keep asking every 500 ms and print each new entry, until killed.
    #[arg(long)]
    pub follow: bool,
}

/// How often `--follow` asks for new entries.
const POLL: Duration = Duration::from_millis(500);
/// How long one answer may take before the command gives up.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// One answer of `GET /_console/api/deliveries`. The entries stay as the
/// server wrote them: printed as given, they hold every field a newer
/// server adds.
#[derive(Deserialize)]
struct Page {
    deliveries: Vec<Value>,
    cursor: Option<String>,
}

/// Prints the newest `--limit` entries, then (with `--follow`) the new ones
/// until killed. Ends with an error the first time the server cannot be
/// reached or refuses; a closed stdout ends it quietly.
pub async fn run(args: &DeliveriesArgs) -> Result<(), Error> {
    let client = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .map_err(|e| Error::Network(format!("cannot make an HTTP client: {e}")))?;
    let endpoint = format!("{}/_console/api/deliveries", args.url.trim_end_matches('/'));
    let mut out = std::io::stdout().lock();
    let first = fetch(&client, &endpoint, &args.token, None, usize::from(args.limit)).await?;
    let mut cursor = first.cursor.clone();
    if print(&mut out, &first).is_err() || !args.follow {
        return Ok(());
    }
    loop {
        let page = fetch(&client, &endpoint, &args.token, cursor.as_deref(), LIST_MAX).await?;
        if print(&mut out, &page).is_err() {
            return Ok(());
        }
        cursor = page.cursor.or(cursor);
        // A full page: more are waiting, ask again at once.
        if page.deliveries.len() < LIST_MAX {
            tokio::time::sleep(POLL).await;
        }
    }
}

fn print(out: &mut impl Write, page: &Page) -> std::io::Result<()> {
    for entry in &page.deliveries {
        writeln!(out, "{entry}")?;
    }
    out.flush()
}

async fn fetch(client: &reqwest::Client, endpoint: &str, token: &str, after: Option<&str>, limit: usize) -> Result<Page, Error> {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(after) = after {
        query.push(("after", after.to_owned()));
    }
    let res = client
        .get(endpoint)
        .bearer_auth(token.trim())
        .query(&query)
        .send()
        .await
        .map_err(|e| Error::Network(format!("could not reach {endpoint}: {e}")))?;
    let status = res.status();
    let text = res.text().await.map_err(|e| Error::Network(format!("{endpoint}: the answer broke off: {e}")))?;
    if !status.is_success() {
        return Err(Error::Network(refusal(endpoint, status, &text)));
    }
    serde_json::from_str(&text)
        .map_err(|e| Error::Network(format!("{endpoint} answered {status} but not with a delivery list ({e}): is it hookcast?")))
}

/// The one line a refusal prints: the status, the server's message, and
/// for a 401 what to check.
fn refusal(endpoint: &str, status: reqwest::StatusCode, body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect());
    let hint = match status.as_u16() {
        401 => " (check --token or HOOKCAST_OPERATOR_TOKEN: the operator token, not a subscribe token)",
        404 => " (is --url the server's base URL, without a path?)",
        _ => "",
    };
    format!("{endpoint} answered {status}: {message}{hint}")
}
