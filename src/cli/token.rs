//! `nagare token new --role read NAME`: a new API secret and its tokens-file line.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Subcommand, ValueEnum};
use nagare::api::auth::{Role, new_token};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Queries, the web page, /metrics, reading dashboards.
    Read,
    /// Also changing dashboards.
    Admin,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a new secret (on stdout, first line) and the line to append to the
    /// tokens file (second line; it holds the secret's SHA-256, not the secret).
    New {
        #[arg(long, value_enum, default_value = "read")]
        role: RoleArg,
        /// Who or what uses the token (letters, digits, . _ - @), e.g. grafana.
        name: String,
    },
}

pub fn run(c: TokenCommand) -> anyhow::Result<ExitCode> {
    match c {
        TokenCommand::New { role, name } => {
            let role = match role {
                RoleArg::Read => Role::Read,
                RoleArg::Admin => Role::Admin,
            };
            let (secret, line) = new_token(role, &name).map_err(|e| anyhow!(e))?;
            eprintln!(
                "# the secret (give it to the client: `Authorization: Bearer SECRET`, \
                 NAGARE_TOKEN, or nagare query --token-file); it is shown only now:"
            );
            println!("{secret}");
            eprintln!(
                "# append this line to the tokens file (http.tokens_file), then restart nagare:"
            );
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
