use std::sync::Arc;

use lambda_http::{run, service_fn, Body, Error, Request, RequestExt, Response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    hookcast_aws::init_tracing();
    let (relay, cfg) = hookcast_aws::relay_from_env().await?;
    let snippet = hookcast_aws::handlers::snippet_with_url(&cfg.ws_url());
    let state = Arc::new((relay, snippet));
    run(service_fn(move |req: Request| {
        let state = state.clone();
        async move {
            let since = req.query_string_parameters_ref().and_then(|q| q.first("since")).map(str::to_owned);
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
                .collect();
            let (relay, snippet) = &*state;
            let r = hookcast_aws::handlers::http(
                relay,
                snippet,
                req.method().as_str(),
                req.raw_http_path(),
                since.as_deref(),
                &headers,
                req.body().as_ref(),
            )
            .await;
            let mut res = Response::builder().status(r.status);
            for (k, v) in r.headers {
                res = res.header(k, v);
            }
            Ok::<_, Error>(res.body(Body::Text(r.body))?)
        }
    }))
    .await
}
