use clap::Parser;

/// glibc's malloc contends between threads on kudo's JSON-heavy work (`kudo bench fanout`
/// spent over 40% of its CPU in it); mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = kudo::cli::Cli::parse();
    match kudo::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            // Messages already embed their cause's text; print only causes that add something.
            let mut shown = err.to_string();
            let mut source = err.source();
            while let Some(cause) = source {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown.push_str(&text);
                }
                source = cause.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}
