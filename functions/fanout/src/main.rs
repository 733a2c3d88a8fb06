#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookcast_aws::run_fanout_function().await
}
