//! The functions: each one's properties over the template's Globals, its
//! bootstrap, environment and role, in the account's concurrency; and its
//! events (HTTP API routes, the stream and queue sources).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::place::Place;
use super::provision::Queues;
use crate::keys::only_keys;
use crate::runtime::{Function, FunctionSpec};
use crate::sources::{QueueSource, StreamSource};
use crate::template::str_of;

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

/// The functions, and what their events attach them to.
#[derive(Default)]
pub(super) struct Functions {
    pub(super) functions: HashMap<String, Arc<Function>>,
    pub(super) http_routes: Vec<crate::http_api::Route>,
    pub(super) stream_sources: Vec<(StreamSource, Arc<Function>)>,
    pub(super) queue_sources: Vec<(QueueSource, Arc<Function>)>,
}

/// Every function (not yet warm), in the account's concurrency, with its
/// events: HTTP API routes and event sources.
pub(super) fn start_functions(place: &Place<'_>) -> Result<Functions, String> {
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
        } else if k == "Layers" {
            // A list in Globals is added to, not replaced: the Globals' layers first.
            let mut layers = merged.get("Layers").and_then(Value::as_array).cloned().unwrap_or_default();
            layers.extend(v.as_array().cloned().unwrap_or_default());
            merged.insert("Layers".into(), Value::Array(layers));
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
            "Layers",
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
    let code_bytes = std::fs::metadata(&bootstrap).map(|m| m.len()).unwrap_or(0);
    let props = p.as_object().cloned().unwrap_or_default();
    if let Some(opt) = super::layers::populate(place, id, &what, &props, &runtime, arch, code_bytes)? {
        env.push(("HOOKCAST_OPT_DIR".into(), opt.display().to_string()));
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
