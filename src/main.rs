//! The `hermes` binary: a thin entry over [`hermes::cli`].

use clap::Parser;

fn main() {
    hermes::memory::tune();
    let cli = hermes::cli::Cli::parse();
    let code = hermes::cli::run(cli);
    // Lines still queued for stderr are written before the process ends.
    hermes::logging::flush();
    std::process::exit(code);
}
