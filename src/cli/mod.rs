//! Subcommands. Each file is one subcommand; all of them call into the library.

mod demo;
mod export;
mod generate;
mod query;
mod replay;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "nagare",
    version,
    about = "NetFlow/IPFIX collector for VMware data centres, with vRNI-style flow queries"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the collector daemon.
    Serve(serve::ServeArgs),
    /// Run the daemon on loopback, fed by a generated 500-VM data centre (a week of
    /// history, then live traffic), and print the web page's URL.
    Demo(demo::DemoArgs),
    /// Send the UDP payloads of a pcap/pcapng to a collector, or decode them offline.
    Replay(replay::ReplayArgs),
    /// Generate realistic NetFlow/IPFIX traffic (a VMware site) and send it to a collector.
    Gen(generate::GenArgs),
    /// Run a query against a running daemon (HTTP or Unix socket).
    Query(query::QueryArgs),
    /// Export stored rollup rows as CSV or JSON lines.
    Export(export::ExportArgs),
    /// Make API tokens (`nagare token new --role read NAME`).
    #[command(subcommand)]
    Token(token::TokenCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Gen(a) => generate::run(a),
        Command::Export(a) => export::run(a),
        Command::Query(a) => query::run(a),
        Command::Token(c) => token::run(c),
    }
}
