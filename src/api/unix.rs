//! The Unix query socket: one request per line (the query text, or the JSON request
//! `{"query": "..."}`), one JSON response per line (the result, or `{"error": ...}`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::ApiError;
use super::http::{QueryRequest, run_query};
use crate::query::Context;

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Binds the socket (replacing a stale one) with mode 0660.
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let err = |source| ApiError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        // a socket left by a previous run; refuse to remove anything else
        let meta = std::fs::symlink_metadata(path).map_err(err)?;
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(l)
}

async fn handle(stream: tokio::net::UnixStream, ctx: Arc<Context>) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r);
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = match (&mut lines)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut buf)
            .await
        {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let line = buf.trim();
        if line.is_empty() {
            continue;
        }
        let out = if buf.len() > MAX_LINE {
            serde_json::json!({"error": {"kind": "limit", "message": "request line longer than 64 KiB"}})
        } else {
            let (text, now) = if line.starts_with('{') {
                match serde_json::from_str::<QueryRequest>(line) {
                    Ok(r) => (r.query, r.now),
                    Err(e) => {
                        let v = serde_json::json!({"error": {"kind": "syntax", "message": format!("bad JSON request: {e}")}});
                        if write_line(&mut w, &v).await.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            } else {
                (line.to_string(), None)
            };
            match run_query(ctx.clone(), text, now).await {
                Ok(v) | Err(v) => v,
            }
        };
        if write_line(&mut w, &out).await.is_err() {
            return;
        }
    }
}

async fn write_line(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    v: &serde_json::Value,
) -> std::io::Result<()> {
    let mut s = v.to_string();
    s.push('\n');
    w.write_all(s.as_bytes()).await
}

/// Serves the socket until `shutdown` completes, then removes it.
pub async fn serve(
    l: UnixListener,
    path: PathBuf,
    ctx: Arc<Context>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let span = tracing::info_span!("query_socket", path = %path.display());
    let _g = span.enter();
    loop {
        tokio::select! {
            a = l.accept() => match a {
                Ok((s, _)) => {
                    tokio::spawn(handle(s, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}
