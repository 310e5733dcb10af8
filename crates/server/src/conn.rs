//! Accepting connections with limits, so that clients that hold connections open cannot take
//! the server down (slowloris):
//! - a request's headers must arrive within `header_read_timeout` (hyper's own timer);
//! - a connection with no bytes moving either way for `idle_timeout` is closed (after its
//!   request in flight, if any, is answered); the longest quiet request is a long poll of
//!   `queues.get_next_task` (25 s), far below the default, and a quiet request in flight is
//!   waited for another minute;
//! - at most `max_connections` are open at once, and never more than the file limit allows
//!   (a quarter of it, less 64 for the database and open files: two listeners, and a request
//!   may hold a file too); past that, new connections are closed at once and a warning says so
//!   (at most every 10 s), so the process never runs out of file descriptors. At start the
//!   soft file limit is raised to the hard one (to 65,536 at most).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a closing connection's quiet request in flight is still waited for.
const GRACE: Duration = Duration::from_secs(60);

/// The connection limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Raises the soft limit on open files to the hard one (65,536 at most) and returns how many
/// connections one listener may hold: `wanted`, or fewer when the file limit is lower.
pub fn connection_cap(wanted: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let target = limit.maximum.unwrap_or(65_536).min(65_536);
    if limit.current.is_some_and(|c| c < target) {
        let raised = Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    let files = limit.current.unwrap_or(65_536);
    let fit = usize::try_from(files.saturating_sub(64) / 4).unwrap_or(usize::MAX);
    wanted.min(fit).max(1)
}

/// Serves `router` on `listener` until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    name: &'static str,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut last_warning: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::warn!("{name}: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    "{name}: {} connections are open, the limit; closing new ones (this one from \
                     {peer}) until some end",
                    limits.max_connections
                );
                last_warning = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_one(stream, router, limits).await;
        });
    }
}

async fn serve_one(stream: TcpStream, router: axum::Router, limits: Limits) {
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked {
        inner: stream,
        start,
        last: last.clone(),
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, TowerToHyperService::new(router));
    tokio::pin!(conn);
    let period = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut closing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = tokio::time::sleep(period) => {
                let idle = start.elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                match closing_since {
                    None if idle >= limits.idle_timeout => {
                        conn.as_mut().graceful_shutdown();
                        closing_since = Some(Instant::now());
                    }
                    // A request in flight may be quiet for a while (a long poll waits up to
                    // 25 s); one that moves nothing for a minute more is given up on.
                    Some(t) if t.elapsed() >= GRACE && idle >= limits.idle_timeout + GRACE => {
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A stream that notes when bytes last moved (milliseconds since `start`).
struct Tracked {
    inner: TcpStream,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
