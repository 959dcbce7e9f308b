//! The `nagare` binary: argument parsing and thin calls into the library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nagare: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
