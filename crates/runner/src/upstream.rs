//! HTTP/1.1 keep-alive connections from the router tier to one segment, bounded and reused.
//!
//! A general-purpose pooled client opens a new connection whenever a request finds no idle one,
//! and under the bursts a batching segment answers in (a whole batch at once) that grew to over a
//! thousand connections per segment at 5,000 req/s, most of the router's CPU going to opening and
//! closing them. [`ConnPool`] keeps at most `max` connections per segment, reuses the most
//! recently idle one first (warm), and makes a request wait for a free connection rather than open
//! one past the bound. A request is never sent twice: one that found its reused connection closed
//! before a byte went out is retried on a new connection; any other failure after that is
//! reported as [`ExchangeError::Sent`] (the request may have run).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

/// How a request to a segment failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// No connection could be made: nothing was sent.
    Connect(String),
    /// The request went out (or may have) and no whole answer came back.
    Sent(String),
}

/// Connections to one `host:port`.
pub struct ConnPool {
    authority: String,
    connect_timeout: Duration,
    /// Largest answer read, bytes (a bigger one is an error, never buffered whole).
    max_response: u64,
    /// One permit per connection in use: at most `max` at a time.
    slots: Semaphore,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl ConnPool {
    /// A pool for `base` (`http://host:port`, no path) of at most `max` connections, reading
    /// answers of at most `max_response` bytes.
    pub fn new(base: &str, max: usize, connect_timeout: Duration, max_response: u64) -> Result<ConnPool, String> {
        let authority = base.strip_prefix("http://").filter(|a| !a.is_empty() && !a.contains('/')).ok_or_else(|| format!("{base:?} is not http://host:port"))?;
        Ok(ConnPool { authority: authority.to_string(), connect_timeout, max_response, slots: Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS)), idle: Mutex::new(Vec::new()) })
    }

    /// Idle connections now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Drop every idle connection (the segment was ejected: its connections may be dead).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ExchangeError> {
        let stream = match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(&self.authority)).await {
            Err(_) => return Err(ExchangeError::Connect(format!("connecting to {} took over {} ms", self.authority, self.connect_timeout.as_millis()))),
            Ok(Err(e)) => return Err(ExchangeError::Connect(format!("connecting to {}: {e}", self.authority))),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = handshake(TokioIo::new(stream)).await.map_err(|e| ExchangeError::Connect(format!("HTTP/1.1 handshake with {}: {e}", self.authority)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Send `method path` with `headers` and `body`, and read the whole answer.
    pub async fn exchange(
        &self,
        method: hyper::Method,
        path: &str,
        headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
        body: Bytes,
    ) -> Result<(hyper::http::response::Parts, Bytes), ExchangeError> {
        let _slot = self.slots.acquire().await.map_err(|_| ExchangeError::Connect("connection pool closed".into()))?;
        let mut req = {
            let mut b = hyper::Request::builder().method(method).uri(path).header(hyper::header::HOST, &self.authority);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            b.body(Full::new(body)).map_err(|e| ExchangeError::Connect(format!("request: {e}")))?
        };
        // A reused connection may have been closed by the segment since; then the request comes
        // back unsent and goes out on the next one (a new one at the latest).
        let (sender, resp) = loop {
            let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let fresh = reused.is_none();
            let mut sender = match reused {
                // Put back as soon as its answer was read: usually ready by now, else at once.
                Some(mut s) if !s.is_closed() => match s.ready().await {
                    Ok(()) => s,
                    Err(_) => continue,
                },
                Some(_) => continue,
                None => self.connect().await?,
            };
            match sender.try_send_request(req).await {
                Ok(resp) => break (sender, resp),
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => req = back,
                    _ => return Err(ExchangeError::Sent(format!("{}: {}", self.authority, error_chain(e.error())))),
                },
            }
        };
        let (parts, body) = resp.into_parts();
        let limit = usize::try_from(self.max_response).unwrap_or(usize::MAX);
        let bytes = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                let why = if e.is::<http_body_util::LengthLimitError>() { format!("answer over {limit} bytes") } else { format!("response broken: {}", error_chain(&*e)) };
                ExchangeError::Sent(format!("{}: {why}", self.authority))
            })?
            .to_bytes();
        // The answer is read: back to the pool, on top (the next user waits for it to be ready,
        // which takes the connection task a moment; this answer does not wait for that).
        if !sender.is_closed() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
        }
        Ok((parts, bytes))
    }
}

/// An error and its causes, `: `-separated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A server counting connections and requests; answers each request with its body.
    async fn echo() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, r) = (conns.clone(), reqs.clone());
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move {
                            r.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let b = req.into_body().collect().await?.to_bytes();
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(b)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                });
            }
        });
        (format!("http://{addr}"), conns, reqs)
    }

    #[tokio::test]
    async fn bursts_reuse_at_most_max_connections() {
        let (base, conns, reqs) = echo().await;
        let pool = Arc::new(ConnPool::new(&base, 8, Duration::from_secs(1), 1 << 20).unwrap());
        for _ in 0..5 {
            let burst: Vec<_> = (0..32)
                .map(|i| {
                    let pool = pool.clone();
                    tokio::spawn(async move { pool.exchange(hyper::Method::POST, "/x", &[], Bytes::from(format!("r{i}"))).await })
                })
                .collect();
            for (i, t) in burst.into_iter().enumerate() {
                let (parts, body) = t.await.unwrap().unwrap();
                assert_eq!(parts.status, 200);
                assert_eq!(body, format!("r{i}"));
            }
        }
        assert_eq!(reqs.load(Ordering::SeqCst), 160);
        assert!(conns.load(Ordering::SeqCst) <= 8, "{} connections for bursts of 32 with max 8", conns.load(Ordering::SeqCst));
        assert_eq!(pool.idle(), conns.load(Ordering::SeqCst));
    }

    /// An answer over the limit is an error, not buffered; the next request still works.
    #[tokio::test]
    async fn answers_over_the_limit_are_refused() {
        let (base, _, _) = echo().await;
        let pool = ConnPool::new(&base, 2, Duration::from_secs(1), 4).unwrap();
        match pool.exchange(hyper::Method::POST, "/x", &[], Bytes::from_static(b"12345")).await {
            Err(ExchangeError::Sent(why)) => assert!(why.ends_with("answer over 4 bytes"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.exchange(hyper::Method::POST, "/x", &[], Bytes::from_static(b"1234")).await.unwrap().1, "1234");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_and_bad_bases_are_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let pool = ConnPool::new(&base, 4, Duration::from_secs(1), 1 << 20).unwrap();
        match pool.exchange(hyper::Method::GET, "/", &[], Bytes::new()).await {
            Err(ExchangeError::Connect(why)) => assert!(why.contains("connecting to 127.0.0.1:"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(ConnPool::new("https://a:1", 1, Duration::from_secs(1), 1).is_err());
        assert!(ConnPool::new("http://a:1/x", 1, Duration::from_secs(1), 1).is_err());
    }
}
