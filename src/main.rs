//! The `hermes` binary: a thin entry over [`hermes::cli`].

use clap::Parser;

fn main() {
    let cli = hermes::cli::Cli::parse();
    std::process::exit(hermes::cli::run(cli));
}
