use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use nagare::query::{QueryResult, render};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Aligned table with human units and sparklines.
    Table,
    /// The result JSON, exactly as the API returns it.
    Json,
    Csv,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The query, e.g. "flows group by Destination Country".
    pub query: String,
    /// Daemon HTTP address.
    #[arg(
        long,
        env = "NAGARE_SERVER",
        default_value = "http://127.0.0.1:9180",
        conflicts_with = "socket"
    )]
    pub server: String,
    /// Use the Unix query socket instead of HTTP.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Evaluate as if now were this Unix time.
    #[arg(long)]
    pub now: Option<i64>,
    /// File holding the API secret (its first line), for a server with tokens.
    #[arg(long, conflicts_with = "socket")]
    pub token_file: Option<PathBuf>,
    /// The API secret (prefer --token-file: the environment is visible to the
    /// user's other processes).
    #[arg(
        long = "token",
        env = "NAGARE_TOKEN",
        hide_env_values = true,
        hide = true
    )]
    pub token: Option<String>,
}

/// The secret to send, from --token-file or NAGARE_TOKEN.
fn secret(a: &QueryArgs) -> anyhow::Result<Option<String>> {
    if let Some(p) = &a.token_file {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the token file {}", p.display()))?;
        let s = text.lines().next().unwrap_or("").trim().to_string();
        if s.is_empty() {
            bail!("the token file {} is empty", p.display());
        }
        return Ok(Some(s));
    }
    Ok(a.token.clone().filter(|t| !t.trim().is_empty()))
}

fn terminal_width() -> usize {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return c;
    }
    // SAFETY: TIOCGWINSZ fills a winsize struct; we pass a valid, zeroed one.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        160
    }
}

/// Sends the query; Ok(result JSON) or Err(error JSON).
fn send(a: &QueryArgs) -> anyhow::Result<Result<serde_json::Value, serde_json::Value>> {
    let mut req = serde_json::json!({ "query": a.query });
    if let Some(n) = a.now {
        req["now"] = n.into();
    }
    if let Some(path) = &a.socket {
        let mut s = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("cannot connect to {}", path.display()))?;
        s.write_all(format!("{req}\n").as_bytes())?;
        let mut line = String::new();
        std::io::BufReader::new(&s).read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .context("the socket answered something that is not JSON")?;
        return Ok(if v.get("error").is_some() {
            Err(v)
        } else {
            Ok(v)
        });
    }
    let url = format!("{}/api/v1/query", a.server.trim_end_matches('/'));
    let mut r = ureq::post(&url)
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json");
    if let Some(t) = secret(a)? {
        r = r.header("authorization", &format!("Bearer {t}"));
    }
    let resp = r
        .send(req.to_string().as_bytes())
        .with_context(|| format!("cannot reach nagare at {}", a.server))?;
    let status = resp.status();
    let body = resp.into_body().read_to_string()?;
    if status == 401 {
        bail!("the server needs a token (HTTP 401): pass --token-file FILE or set NAGARE_TOKEN");
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("HTTP {status}: {body}"))?;
    Ok(if status.is_success() { Ok(v) } else { Err(v) })
}

pub fn run(a: QueryArgs) -> anyhow::Result<ExitCode> {
    match send(&a)? {
        Ok(v) => {
            let out = match a.format {
                Format::Json => format!("{v}\n"),
                Format::Table | Format::Csv => {
                    let r: QueryResult =
                        serde_json::from_value(v).context("unexpected result shape")?;
                    if matches!(a.format, Format::Csv) {
                        render::csv(&r)
                    } else {
                        render::table(&r, terminal_width())
                    }
                }
            };
            std::io::stdout().write_all(out.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if matches!(a.format, Format::Json) {
                println!("{e}");
            } else {
                match e["error"]["rendered"].as_str() {
                    Some(r) => eprint!("{r}"),
                    None => eprintln!(
                        "error: {}",
                        e["error"]["message"].as_str().unwrap_or("query failed")
                    ),
                }
            }
            if e["error"]["kind"] == "busy" {
                bail!("the daemon is busy (too many queries running or waiting); try again");
            }
            if e["error"]["kind"] == "unavailable" || e["error"]["kind"] == "internal" {
                bail!("the daemon could not answer");
            }
            Ok(ExitCode::from(2))
        }
    }
}
