//! The `hermes` binary: a thin entry over [`hermes::cli`].

use clap::Parser;

fn main() {
    hermes::memory::tune();
    let cli = hermes::cli::Cli::parse();
    std::process::exit(hermes::cli::run(cli));
}
