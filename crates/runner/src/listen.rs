//! The HTTP listener of `parva serve` with connection limits, which `axum::serve` lacks:
//!
//! - at most `max_connections` open connections: past it the listener stops accepting, so new
//!   connections wait in the kernel's listen backlog (and time out there, client side) until
//!   one closes; nothing is accepted only to be dropped;
//! - `header_timeout`: a request's head (request line and headers) must arrive within this time
//!   of its first byte (slowloris: headers trickled a byte at a time are cut off);
//! - `idle_timeout`: a connection with no request in progress is closed after this time (a new
//!   connection that sends nothing counts as idle), and so is one whose client stops reading a
//!   response for this long.
//!
//! How: every accepted stream is wrapped in [`LimitedIo`], which holds a connection slot and
//! knows the connection's phase (idle, reading a head, busy with a request) through a
//! [`ConnHandle`] shared with the HTTP layer; a read that waits past the phase's deadline fails
//! with `TimedOut`, and hyper closes the connection. The HTTP layer marks a connection busy
//! while its request is served ([`ConnHandle::busy`]): the body has its own deadline there
//! (`--body-timeout`), and waiting for the model has none (the SLO governs it).
//!
//! Closing after a response that left a request body unread (413, 408), the write side is shut
//! first and what the client still sends is drained for up to 1 s (4 MiB), so that the client
//! reads the response rather than a connection reset.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connection limits of the listener.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// The first byte of a request came; its head is not complete yet.
    Head,
    /// A request is being served.
    Busy,
}

#[derive(Debug)]
struct ConnState {
    phase: Phase,
    since: Instant,
}

/// The connection a request came on, as the HTTP layer sees it (through `ConnectInfo`).
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<Mutex<ConnState>>);

impl ConnHandle {
    fn new() -> Self {
        ConnHandle(Arc::new(Mutex::new(ConnState { phase: Phase::Idle, since: Instant::now() })))
    }

    fn set(&self, phase: Phase) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.phase = phase;
        s.since = Instant::now();
    }

    fn get(&self) -> (Phase, Instant) {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (s.phase, s.since)
    }

    /// Mark the connection busy with a request until the guard is dropped (then idle).
    pub fn busy(&self) -> BusyGuard {
        self.set(Phase::Busy);
        BusyGuard(self.clone())
    }
}

/// Marks its connection idle when dropped.
pub struct BusyGuard(ConnHandle);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(Phase::Idle);
    }
}

impl Connected<IncomingStream<'_, LimitedListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Self {
        stream.io().conn.clone()
    }
}

/// A TCP listener that enforces [`ConnLimits`].
pub struct LimitedListener {
    inner: TcpListener,
    limits: ConnLimits,
    slots: Arc<Semaphore>,
    open: Arc<AtomicUsize>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, limits: ConnLimits) -> Self {
        let slots = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
        LimitedListener { inner, limits, slots, open: Arc::new(AtomicUsize::new(0)) }
    }

    /// Connections open now (shared counter, for tests and metrics).
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedIo, SocketAddr) {
        // A slot first: at the limit, connections wait in the backlog.
        let permit = match self.slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await,
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // No Nagle delay on responses (a KServe answer is small and wanted at once).
                    let _ = stream.set_nodelay(true);
                    self.open.fetch_add(1, Ordering::SeqCst);
                    let io = LimitedIo {
                        inner: stream,
                        conn: ConnHandle::new(),
                        limits: self.limits,
                        read_timer: Box::pin(tokio::time::sleep(self.limits.idle_timeout)),
                        write_timer: Box::pin(tokio::time::sleep(self.limits.idle_timeout)),
                        write_stalled: None,
                        linger: None,
                        _slot: Slot { _permit: permit, open: self.open.clone() },
                    };
                    return (io, addr);
                }
                Err(e) => {
                    // Per-connection errors (reset before accept) are nothing; anything else
                    // (out of file descriptors) is retried after a pause, as axum does.
                    if !matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        tracing::error!("accept: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An accepted connection with its deadlines and its slot (released when it is dropped).
pub struct LimitedIo {
    inner: TcpStream,
    conn: ConnHandle,
    limits: ConnLimits,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    write_stalled: Option<Instant>,
    /// Closing: the write side is shut; unread request bytes are drained until this deadline.
    linger: Option<(Instant, usize)>,
    _slot: Slot,
}

/// After a response that leaves a request body unread (413, 408), the connection's write side
/// is shut and what the client still sends is read and dropped for up to this long (and
/// [`LINGER_BYTES`]), so that the client reads the response instead of a reset.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;

fn timed_out(what: &str, after: Duration) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} for {} s", after.as_secs_f64()))
}

impl AsyncRead for LimitedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.conn.get().0 == Phase::Idle {
                    this.conn.set(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (phase, since) = this.conn.get();
                let (limit, what) = match phase {
                    Phase::Idle => (this.limits.idle_timeout, "idle connection"),
                    Phase::Head => (this.limits.header_timeout, "request head incomplete"),
                    Phase::Busy => return Poll::Pending,
                };
                let deadline = since + limit;
                if this.read_timer.deadline() != deadline {
                    this.read_timer.as_mut().reset(deadline);
                }
                match this.read_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out(what, limit))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl LimitedIo {
    /// A write that could not proceed: fail once the client has not read for `idle_timeout`.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limits.idle_timeout;
        let since = *self.write_stalled.get_or_insert_with(Instant::now);
        let deadline = since + limit;
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        match self.write_timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(timed_out("client not reading the response", limit)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Pending => this.stalled(cx).map(Err),
            ready => {
                this.write_stalled = None;
                ready
            }
        }
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.stalled(cx).map(Err),
            ready => {
                this.write_stalled = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            match Pin::new(&mut this.inner).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => this.linger = Some((Instant::now() + LINGER, 0)),
                other => return other,
            }
        }
        let mut scratch = [0u8; 16 << 10];
        loop {
            let Some((deadline, drained)) = this.linger.as_mut() else { return Poll::Ready(Ok(())) };
            if *drained >= LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => *drained += buf.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let deadline = *deadline;
                    if this.read_timer.deadline() != deadline {
                        this.read_timer.as_mut().reset(deadline);
                    }
                    return match this.read_timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// Make room for `connections` open sockets besides the process's other files: raise the soft
/// `RLIMIT_NOFILE` toward the hard limit when it is lower. Returns the connections the limit
/// allows (`connections`, or fewer when the hard limit is too low).
pub fn ensure_fd_room(connections: usize, other_files: usize) -> usize {
    let want = (connections + other_files) as libc::rlim_t;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return connections;
        }
        if lim.rlim_cur < want {
            let new = libc::rlimit { rlim_cur: want.min(lim.rlim_max), rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                lim.rlim_cur = new.rlim_cur;
            }
        }
    }
    connections.min((lim.rlim_cur as usize).saturating_sub(other_files).max(1))
}
