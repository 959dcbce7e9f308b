//! The `nagare` binary: argument parsing and thin calls into the library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nagare: error: {}", message(&e));
            std::process::ExitCode::from(1)
        }
    }
}

/// The error and its causes, leaving out a cause whose text the message already shows
/// (library errors name their source inline).
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}
