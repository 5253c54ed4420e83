use clap::Parser;
use virtdeck::cli::{load_config, run_tool, Cli, Command};
use virtdeck::config::Config;

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let running = virtdeck::web::server::start(cfg)?;
        tracing::info!(url = %running.base_url(), "virtdeck is listening");
        if let Some(url) = &running.setup_url {
            tracing::warn!(
                "no account exists yet: create the first admin at {url} (valid until used or restarted)"
            );
        }
        running.server.await?;
        Ok(())
    })
}

/// Caps glibc's per-thread malloc arenas: request handlers run on many blocking threads,
/// and each arena would otherwise keep its own high-water mark of freed memory (measured
/// by `make bench`: the resident size under load stays far lower with two).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("virtdeck: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Serve(_) => {
            init_logging(&cfg);
            serve(cfg)
        }
        _ => run_tool(&cli, &cfg),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "virtdeck stopped");
            eprintln!("virtdeck: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
