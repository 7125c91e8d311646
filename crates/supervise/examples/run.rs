//! `selfheal run` on its own, without the full CLI: the same flags and
//! exit status. Used by the integration tests and the benchmark script.
//!
//! `cargo run -p selfheal-supervise --example run -- [OPTIONS] -- CMD [ARGS…]`

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "selfheal-run",
    about = "Supervise one program: restart it when it crashes or hangs."
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "SELFHEAL_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    run: selfheal_supervise::RunArgs,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    match selfheal_supervise::run_main(cli.run) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("selfheal run: {e:#}");
            std::process::exit(125);
        }
    }
}
