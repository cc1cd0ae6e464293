#[tokio::main]
async fn main() -> std::process::ExitCode {
    facevault::cli::run().await
}
