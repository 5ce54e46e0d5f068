//! `rop-llm`: a GGUF model served by llama.cpp on an OpenAI-compatible
//! loopback endpoint. `rop` starts it for `llm_engine = local` (llama.cpp
//! and whisper.cpp cannot share one binary) and talks to it like to any
//! chat-completions server.
//!
//! Protocol with the parent: the model is loaded first, then one line
//! `listening on http://ADDR/v1/` goes to stdout. The bearer token comes in
//! `ROP_LLM_TOKEN` (not on the command line, where `ps` shows it). With
//! `--exit-with-stdin` the process ends when its stdin closes, which is
//! when the parent exits, however it exits.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use rop_llm::{LocalLlama, LocalLlamaConfig, DEFAULT_BATCH, DEFAULT_CONTEXT_TOKENS};

#[derive(Parser)]
#[command(
    name = "rop-llm",
    version,
    about = "Языковая модель (llama.cpp) для Цифрового РОПа"
)]
struct Args {
    /// The GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// CPU threads; 0 means all cores.
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// Prompt and answer together, in tokens.
    #[arg(long, default_value_t = DEFAULT_CONTEXT_TOKENS)]
    context_tokens: u32,
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: u32,
    /// Port 0 picks a free one; the line on stdout names it.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// End when stdin closes (the parent's end of the pipe).
    #[arg(long)]
    exit_with_stdin: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // llama.cpp's own log (target `llama-cpp-2`) describes every
                // tensor at info level.
                .unwrap_or_else(|_| "info,llama-cpp-2=warn".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(message) = run(args) {
        tracing::error!("{message}");
        eprintln!("rop-llm: {message}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {}: only loopback addresses; the endpoint is for rop on this machine",
            args.listen
        ));
    }
    let token = std::env::var("ROP_LLM_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if args.exit_with_stdin {
        std::thread::spawn(|| {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            tracing::info!("parent gone (stdin closed), exiting");
            std::process::exit(0);
        });
    }
    let mut config = LocalLlamaConfig::new(&args.model);
    if args.threads > 0 {
        config.threads = args.threads;
    }
    config.context_tokens = args.context_tokens;
    config.batch = args.batch;
    let model = LocalLlama::load(config).map_err(|error| error.to_string())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("tokio: {error}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|error| format!("--listen {}: {error}", args.listen))?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("--listen {}: {error}", args.listen))?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on http://{address}/v1/")
            .and_then(|()| stdout.flush())
            .map_err(|error| format!("stdout: {error}"))?;
        tracing::info!(%address, "serving the language model");
        axum::serve(listener, rop_llm::server::router(model, token))
            .await
            .map_err(|error| format!("server: {error}"))
    })
}
