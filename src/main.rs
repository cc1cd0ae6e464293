/// mimalloc instead of the system allocator: the verify path makes many small,
/// short-lived allocations on every worker thread, and glibc's arenas spent
/// about a fifth of the server's CPU on them, much of it waiting on their locks
/// (a `perf` profile of `facevault bench`; BENCHMARKS.md, "Where verify's CPU goes").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    facevault::cli::run().await
}
