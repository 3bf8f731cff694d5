//! The connections Kassa serves HTTP/1 on, and their clocks: a request head, the first or any
//! later one on a kept-alive connection, must be complete within 5 s of its first byte, or the
//! connection is closed (actix-http times only the first head of a connection, and from the
//! accept, so a client could trickle a second one forever). A connection with no head begun,
//! new or kept alive, is idle, and closed after the idle time. Knows HTTP only as far as "a
//! head ends with an empty line" and "the server answered"; never parses, buffers or changes
//! a byte.

use actix_http::HttpService;
use actix_http::error::DispatchError;
use actix_service::{IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, map_config};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Response, Server};
use actix_web::rt::net::TcpStream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a client has to send a whole request head once it began (API.md Conventions).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection stays open for its next request, or a new one for its first:
/// longer than the idle timeouts of what usually sits in front (ingress-nginx's and cloud load
/// balancers' 60 s, HTTP clients' pools), so that the client, not Kassa, closes an idle one. A server
/// that closes first races a client reusing the connection at that moment: the request is
/// lost with "connection closed before message completed" (with 5 s, 2 of 1,000 flash-sale
/// shoppers in one CI run), and a proxy answers its shopper 502.
pub const KEEP_ALIVE: Duration = Duration::from_secs(75);
/// Connections the kernel completes before the server accepts them: a flash sale's shoppers
/// arrive at once (std's `TcpListener::bind` leaves 128; Linux caps it at `somaxconn`).
pub const LISTEN_BACKLOG: i32 = 1024;
/// How long a connection being closed waits for the client to let go of it.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Listens on `address` (`host:port`; the first of its addresses that binds) with
/// [`LISTEN_BACKLOG`].
pub fn bind(address: &str) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in address.to_socket_addrs()? {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        // As std does on Unix: a restart can listen again while old connections linger.
        #[cfg(unix)]
        socket.set_reuse_address(true)?;
        match socket
            .bind(&addr.into())
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(()) => return Ok(socket.into()),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

/// Serves the apps `app` makes on `listener` with `workers` threads; on a graceful stop, the
/// requests in flight get `shutdown_grace_secs`. Signals are the caller's to handle.
pub fn serve<F, I, S, B>(
    listener: std::net::TcpListener,
    workers: usize,
    shutdown_grace_secs: u64,
    app: F,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, actix_http::Request>,
    S: ServiceFactory<actix_http::Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<actix_http::Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let local_addr = listener.local_addr()?;
    let builder = actix_server::Server::build();
    // Closes idle kept-alive connections when a graceful stop begins, as HttpServer does.
    let stopping = builder.graceful_shutdown_signal();
    let server = builder
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(shutdown_grace_secs)
        .listen("kassa-http", listener, move || {
            let stopping = stopping.clone();
            let app = app().into_factory().map_err(|err: S::Error| {
                let err: actix_web::Error = err.into();
                err.error_response()
            });
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .keep_alive(KEEP_ALIVE)
                // actix-http's clock for the first head runs from the accept, so it also
                // closes a new connection a client has not used yet. HTTP clients open such
                // connections under bursts (hyper, Go: a request that waited for a connection
                // takes one freed meanwhile, and the new one goes to the pool unused); closed
                // after 5 s, the client's first request on it raced the close and got 408 or
                // a dropped request (3 of 1,000 flash-sale shoppers in the replica test). So
                // it is idle time here, and HeadDeadline times the head from its first byte.
                .client_request_timeout(KEEP_ALIVE)
                .client_disconnect_timeout(DISCONNECT_TIMEOUT)
                .local_addr(local_addr)
                .h1(map_config(app, |_| AppConfig::default()));
            actix_service::fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>((HeadDeadline::new(io, REQUEST_HEAD_TIMEOUT), peer))
            })
            .and_then(http)
        })?
        .run();
    Ok(server)
}

/// Where a connection is in its exchange, as far as the head clock cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No byte of the next head yet (an idle connection is keep-alive's business).
    AwaitingHead,
    /// A head began and is not complete: the clock runs.
    ReadingHead,
    /// The head is complete; the request is served, however long that takes, until the
    /// server answers.
    Answering,
}

/// A connection whose request heads must each be complete within `timeout` of their first
/// byte; a late one makes reading fail (`TimedOut`), which closes the connection.
pub struct HeadDeadline<T> {
    io: T,
    timeout: Duration,
    phase: Phase,
    /// Bytes on the head's current line (CR not counted), and whether it had a non-empty line.
    line_bytes: usize,
    had_line: bool,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> HeadDeadline<T> {
    pub fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            phase: Phase::AwaitingHead,
            line_bytes: 0,
            had_line: false,
            deadline: None,
        }
    }

    /// Follows the bytes read: the first one starts the clock, the empty line that ends the
    /// head stops it (what follows is a body or a pipelined request, not timed here).
    fn on_read(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match self.phase {
                Phase::Answering => return,
                Phase::AwaitingHead => {
                    self.phase = Phase::ReadingHead;
                    self.line_bytes = 0;
                    self.had_line = false;
                    let deadline = Instant::now() + self.timeout;
                    match &mut self.deadline {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                Phase::ReadingHead => {}
            }
            match byte {
                b'\n' if self.line_bytes == 0 && self.had_line => self.phase = Phase::Answering,
                b'\n' => {
                    self.had_line |= self.line_bytes > 0;
                    self.line_bytes = 0;
                }
                b'\r' => {}
                _ => self.line_bytes += 1,
            }
        }
    }

    /// The server answered (an interim 1xx aside): the next byte read begins a new head.
    fn on_write(&mut self, bytes: &[u8]) {
        let interim = bytes.starts_with(b"HTTP/1.1 1") || bytes.starts_with(b"HTTP/1.0 1");
        if !bytes.is_empty() && !interim {
            self.phase = Phase::AwaitingHead;
        }
    }

    fn late(&mut self, cx: &mut Context<'_>) -> bool {
        self.phase == Phase::ReadingHead
            && self
                .deadline
                .as_mut()
                .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

fn head_too_slow() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the request head was not complete within its time",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Checked before reading too: a client trickling bytes is always ready.
        if this.late(cx) {
            return Poll::Ready(Err(head_too_slow()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.on_read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.late(cx) => Poll::Ready(Err(head_too_slow())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.on_write(&buf[..n]);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
            && let Some(first) = bufs.iter().find(|b| !b.is_empty())
        {
            this.on_write(&first[..n.min(first.len())]);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// Short, so that the tests run on real time.
    const TIMEOUT: Duration = Duration::from_millis(300);

    /// Reads what the client sent, as the server would.
    async fn read_some<T: AsyncRead + Unpin>(conn: &mut HeadDeadline<T>) -> io::Result<usize> {
        let mut buf = [0u8; 1024];
        conn.read(&mut buf).await
    }

    #[tokio::test]
    async fn a_head_trickled_past_its_time_fails_the_read() {
        let (mut client, server) = duplex(4096);
        let mut conn = HeadDeadline::new(server, TIMEOUT);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        read_some(&mut conn).await.expect("the head began");
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"X-Slow: 1\r\n").await.expect("write");
            read_some(&mut conn).await.expect("still within its time");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(b"X-Slow: 1\r\n").await.expect("write");
        let err = read_some(&mut conn).await.expect_err("too late");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_half_head_then_silence_fails_the_read_once_its_time_is_up() {
        let (mut client, server) = duplex(4096);
        let mut conn = HeadDeadline::new(server, TIMEOUT);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        read_some(&mut conn).await.expect("the head began");
        let err = read_some(&mut conn).await.expect_err("woken by its clock");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_complete_head_is_served_however_long_the_answer_takes_and_the_next_is_timed() {
        let (mut client, server) = duplex(4096);
        let mut conn = HeadDeadline::new(server, TIMEOUT);
        client
            .write_all(b"POST /api/orders HTTP/1.1\nHost: k\n\n{}")
            .await
            .expect("write");
        read_some(&mut conn).await.expect("a whole head");
        // A slow checkout: no clock while the request is served.
        let idle = tokio::time::timeout(TIMEOUT * 3, read_some(&mut conn)).await;
        assert!(idle.is_err(), "the read waited for the client: {idle:?}");
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .expect("interim");
        conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("answer");
        // The second head on the connection has its 5 s too.
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        read_some(&mut conn).await.expect("the second head began");
        let err = read_some(&mut conn).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn leading_empty_lines_do_not_count_as_a_whole_head() {
        let (mut client, server) = duplex(4096);
        let mut conn = HeadDeadline::new(server, TIMEOUT);
        client
            .write_all(b"\r\n\r\nGET / HTTP/1.1\r\n")
            .await
            .expect("write");
        read_some(&mut conn).await.expect("the head began");
        let err = read_some(&mut conn).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
