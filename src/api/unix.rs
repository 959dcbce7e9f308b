//! The Unix query socket: one request per line (the query text, or the JSON request
//! `{"query": "..."}`), one JSON response per line (the result, or `{"error": ...}`).
//!
//! Its mode (0660) is its access control. Lines are framed strictly: a line longer than
//! 64 KiB is answered with an error and the rest of it is discarded (never run); a
//! line that is not UTF-8 is answered with an error; a client must send each whole
//! line within `http.socket_timeout_ms`. A socket that another process still serves
//! is never removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::{ACCEPT_LOG_INTERVAL, AcceptErrorLog, ApiError, ApiMetrics};
use crate::query::Context;
use crate::query::wire::{QueryRequest, error_json, run_query};

/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// Time to send one whole request line.
    pub timeout: Duration,
}

/// Binds the socket with mode 0660. An existing socket is removed only when it is
/// stale (nothing accepts connections on it); a live one is an error.
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let err = |source| ApiError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(ApiError::SocketInUse {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // left by a run that ended without removing it
                tracing::info!(path = %path.display(), "removing a stale query socket");
                std::fs::remove_file(path).map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(l)
}

/// One framed request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole line (without its newline) of at most `max` bytes.
    Whole,
    /// The line passed `max` bytes; `buf` holds its first `max`, the rest is unread.
    TooLong,
    /// The stream ended (bytes of an unterminated last line stay in `buf`).
    Eof,
}

/// Reads one line into `buf` (cleared first), at most `max` bytes of it.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(Line::Eof);
        }
        let room = max - buf.len();
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) if i <= room => {
                buf.extend_from_slice(&avail[..i]);
                r.consume(i + 1);
                return Ok(Line::Whole);
            }
            _ if avail.len() > room => {
                buf.extend_from_slice(&avail[..room]);
                r.consume(room);
                return Ok(Line::TooLong);
            }
            _ => {
                let n = avail.len();
                buf.extend_from_slice(avail);
                r.consume(n);
            }
        }
    }
}

/// Discards the rest of a line, through its newline. False when the stream ended.
pub async fn skip_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<bool> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(false);
        }
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(true);
            }
            None => {
                let n = avail.len();
                r.consume(n);
            }
        }
    }
}

fn error(kind: &str, message: &str) -> Vec<u8> {
    error_json(kind, message).to_string().into_bytes()
}

async fn handle(
    stream: tokio::net::UnixStream,
    ctx: Arc<Context>,
    opts: SocketOptions,
    metrics: Arc<ApiMetrics>,
) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut buf = Vec::with_capacity(1024);
    let timeout_msg = format!(
        "no whole request line within {} ms (http.socket_timeout_ms); closing",
        opts.timeout.as_millis()
    );
    let mut last = false;
    while !last {
        let got = tokio::time::timeout(opts.timeout, read_line(&mut r, &mut buf, MAX_LINE)).await;
        if matches!(got, Ok(Ok(Line::Eof))) && !buf.is_empty() {
            last = true; // the stream ended the last line
        }
        let out = match got {
            Err(_) => {
                // idle: close quietly; a request begun and not ended: say why
                if !buf.is_empty() {
                    metrics.socket_errors.inc();
                    let _ = write_line(&mut w, &error("timeout", &timeout_msg)).await;
                }
                return;
            }
            Ok(Err(_)) => return,
            Ok(Ok(Line::Eof)) if !last => return,
            Ok(Ok(Line::TooLong)) => {
                metrics.socket_errors.inc();
                let msg = format!(
                    "request line longer than {} KiB; the line was discarded",
                    MAX_LINE / 1024
                );
                if write_line(&mut w, &error("limit", &msg)).await.is_err() {
                    return;
                }
                match tokio::time::timeout(opts.timeout, skip_line(&mut r)).await {
                    Ok(Ok(true)) => continue,
                    Ok(Ok(false)) | Ok(Err(_)) => return,
                    Err(_) => {
                        let _ = write_line(&mut w, &error("timeout", &timeout_msg)).await;
                        return;
                    }
                }
            }
            Ok(Ok(Line::Whole | Line::Eof)) => match std::str::from_utf8(&buf) {
                Err(e) => {
                    metrics.socket_errors.inc();
                    error(
                        "syntax",
                        &format!(
                            "the request is not UTF-8 text (invalid byte at offset {})",
                            e.valid_up_to()
                        ),
                    )
                }
                Ok(line) => {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    answer(&ctx, line).await
                }
            },
        };
        if write_line(&mut w, &out).await.is_err() {
            return;
        }
    }
}

async fn answer(ctx: &Arc<Context>, line: &str) -> Vec<u8> {
    let (text, now) = if line.starts_with('{') {
        match serde_json::from_str::<QueryRequest>(line) {
            Ok(r) => (r.query, r.now),
            Err(e) => return error("syntax", &format!("bad JSON request: {e}")),
        }
    } else {
        (line.to_string(), None)
    };
    match run_query(ctx.clone(), text, now).await {
        Ok(bytes) => bytes,
        Err((_, v)) => v.to_string().into_bytes(),
    }
}

async fn write_line(w: &mut tokio::net::unix::OwnedWriteHalf, v: &[u8]) -> std::io::Result<()> {
    w.write_all(v).await?;
    w.write_all(b"\n").await
}

/// Serves the socket until `shutdown` completes, then removes it. The caller runs it
/// in its span (`.instrument`).
pub async fn serve(
    l: UnixListener,
    path: PathBuf,
    ctx: Arc<Context>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    opts: SocketOptions,
    metrics: Arc<ApiMetrics>,
) {
    let log = AcceptErrorLog::new("socket", ACCEPT_LOG_INTERVAL);
    loop {
        tokio::select! {
            a = l.accept() => match a {
                Ok((s, _)) => {
                    tokio::spawn(handle(s, ctx.clone(), opts, metrics.clone()));
                }
                Err(e) => {
                    log.record(&metrics.socket_accept_errors, &e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frame(input: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        let mut r = BufReader::with_capacity(7, input);
        let mut out = vec![];
        let mut buf = vec![];
        loop {
            let l = read_line(&mut r, &mut buf, max).await.expect("read");
            let done = l == Line::Eof;
            let too_long = l == Line::TooLong;
            out.push((l, buf.clone()));
            if done {
                return out;
            }
            if too_long && !skip_line(&mut r).await.expect("skip") {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_are_framed_strictly() {
        let got = frame(b"abc\n0123456789tail\nok\npartial", 10).await;
        assert_eq!(
            got,
            vec![
                (Line::Whole, b"abc".to_vec()),
                (Line::TooLong, b"0123456789".to_vec()),
                (Line::Whole, b"ok".to_vec()),
                (Line::Eof, b"partial".to_vec()),
            ]
        );
        // exactly `max` bytes is a whole line
        let got = frame(b"0123456789\n", 10).await;
        assert_eq!(got[0], (Line::Whole, b"0123456789".to_vec()));
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let _g = rt.enter();
        let e = bind(&path).expect_err("in use");
        assert!(matches!(e, ApiError::SocketInUse { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(path.exists(), "the live socket was left alone");
        drop(live); // the file stays, nothing accepts on it
        assert!(path.exists());
        let _l = bind(&path).expect("a stale socket is replaced");
        std::fs::write(dir.path().join("file"), b"x").expect("write");
        assert!(bind(&dir.path().join("file")).is_err(), "not a socket");
    }
}
