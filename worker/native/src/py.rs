//! The thin PyO3 layer: `tunnelpy.worker._native`.
//!
//! Converts types, maps errors to the `Native*` exception classes and hands futures to
//! pyo3-async-runtimes, which runs them on one tokio runtime per process and resolves
//! asyncio futures (asyncio or uvloop). No future holds a Python object or the GIL: every
//! argument is converted before the future is created.
//!
//! The runtime is built on first use, never at import: the project forks workers from a
//! forkserver that has imported this module. A process that forks after the runtime
//! started gets a clear error in the child instead of a hang.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use iroh::endpoint::{RecvStream, SendStream, VarInt};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::sync::Mutex;

use crate::error::Error;
use crate::net;
use crate::options::{Congestion, EndpointOptions as CoreOptions, Relays};
use crate::paths;
use crate::relays;
use crate::splice;
use crate::udp;

create_exception!(
    _native,
    NativeError,
    PyException,
    "Base of every error of the native data plane."
);
create_exception!(
    _native,
    NativeConfigError,
    NativeError,
    "Bad options or input."
);
create_exception!(
    _native,
    NativeConnectFailed,
    NativeError,
    "The peer could not be reached in time."
);
create_exception!(
    _native,
    NativeConnectionLost,
    NativeError,
    "The connection or endpoint is gone."
);
create_exception!(
    _native,
    NativeStreamReset,
    NativeError,
    "A stream was reset or stopped."
);

fn to_py(err: Error) -> PyErr {
    let msg = err.message().to_string();
    match err {
        Error::Config(_) => NativeConfigError::new_err(msg),
        Error::ConnectFailed(_) => NativeConnectFailed::new_err(msg),
        Error::ConnectionLost(_) => NativeConnectionLost::new_err(msg),
        Error::StreamReset(_) => NativeStreamReset::new_err(msg),
        Error::Io(_) => NativeError::new_err(msg),
    }
}

fn config(msg: impl Into<String>) -> PyErr {
    NativeConfigError::new_err(msg.into())
}

// ---- runtime -------------------------------------------------------------------------

static RUNTIME_PID: OnceLock<u32> = OnceLock::new();
static WORKER_THREADS: AtomicU32 = AtomicU32::new(2);
/// Set by an `atexit` hook: from then on no future may complete into Python.
static EXITING: AtomicBool = AtomicBool::new(false);
static EXIT_NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// Futures handed to Python that have neither finished, been dropped nor been parked.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct Flight;

impl Drop for Flight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Registered with `atexit`. pyo3-async-runtimes resolves (or acknowledges the
/// cancellation of) each awaitable from a runtime thread that takes the GIL; doing that
/// while the interpreter finalizes aborts the process ("PyGILState_Release ...
/// finalizing", or a segfault). So: park every future that has not finished yet, then
/// release the GIL briefly so that the resolutions already queued run while Python is
/// still whole. Parked futures' threads end with the process.
#[pyfunction]
fn _at_exit(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    EXIT_NOTIFY.notify_waiters();
    if RUNTIME_PID.get() != Some(&std::process::id()) {
        return; // no runtime here (or only a parent's, before a fork)
    }
    py.detach(|| {
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while IN_FLIGHT.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}

/// `fut`, unless the interpreter starts exiting first: then it never completes.
async fn unless_exiting<T>(fut: impl std::future::Future<Output = T>, flight: Flight) -> T {
    let exiting = async {
        loop {
            let notified = EXIT_NOTIFY.notified();
            if EXITING.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    };
    let out = tokio::select! {
        out = fut => Some(out),
        () = exiting => None,
    };
    match out {
        Some(out) if !EXITING.load(Ordering::SeqCst) => out, // `flight` drops on return
        _ => {
            drop(flight);
            std::future::pending().await
        }
    }
}

/// The per-process runtime, configured here and built by pyo3-async-runtimes on first use.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    let pid = std::process::id();
    let owner = *RUNTIME_PID.get_or_init(|| {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(WORKER_THREADS.load(Ordering::Relaxed) as usize)
            // pyo3-async-runtimes resolves each awaitable from a blocking-pool thread that
            // takes the GIL: more than a few such threads only queue on the GIL.
            .max_blocking_threads(4)
            .thread_name("tunnelpy-native")
            .enable_all();
        pyo3_async_runtimes::tokio::init(builder);
        pid
    });
    if owner != pid {
        return Err(NativeError::new_err(
            "the native runtime was started before this process was forked: \
             create native objects only in the child (spawn or forkserver)",
        ));
    }
    Ok(pyo3_async_runtimes::tokio::get_runtime())
}

/// Runs `fut` on the runtime as an asyncio awaitable (of the running loop).
fn spawn<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: std::future::Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    runtime()?;
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let flight = Flight;
    pyo3_async_runtimes::tokio::future_into_py(py, unless_exiting(fut, flight))
}

/// Worker threads of the runtime (1 to 4; default 2). Only before the first native call.
#[pyfunction]
fn set_worker_threads(n: u32) -> PyResult<()> {
    if RUNTIME_PID.get().is_some() {
        return Err(config(
            "set_worker_threads must be called before the first native call",
        ));
    }
    if !(1..=4).contains(&n) {
        return Err(config("worker threads must be between 1 and 4"));
    }
    WORKER_THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// A ticket for `peer` (ticket or EndpointId) with the direct addresses `addresses` added.
#[pyfunction]
fn ticket_with(peer: &str, addresses: Vec<String>) -> PyResult<String> {
    let mut extra = Vec::with_capacity(addresses.len());
    for a in &addresses {
        extra.push(
            a.parse::<SocketAddr>()
                .map_err(|_| config(format!("{a:?} is not IP:PORT")))?,
        );
    }
    net::ticket_with(peer, &extra).map_err(to_py)
}

/// `(endpoint_id, ["IP:PORT", ...])` of a ticket or an EndpointId.
#[pyfunction]
fn ticket_parts(peer: &str) -> PyResult<(String, Vec<String>)> {
    let (id, addrs) = net::ticket_parts(peer).map_err(to_py)?;
    Ok((id, addrs.iter().map(|a| a.to_string()).collect()))
}

/// The EndpointId of a 32-byte secret key.
#[pyfunction]
fn endpoint_id_of(secret: &[u8]) -> PyResult<String> {
    let key: [u8; 32] = secret
        .try_into()
        .map_err(|_| config("a secret key is 32 bytes"))?;
    Ok(net::endpoint_id_of(&key))
}

/// Whether this process has started the native runtime (and its threads).
#[pyfunction]
fn runtime_started() -> bool {
    RUNTIME_PID.get().is_some()
}

// ---- options -------------------------------------------------------------------------

/// How an endpoint reaches the network; see `_native.pyi`.
#[pyclass(frozen, module = "tunnelpy.worker._native")]
#[derive(Clone)]
struct EndpointOptions {
    inner: CoreOptions,
}

fn seconds(v: Option<f64>, name: &str) -> PyResult<Option<Duration>> {
    v.map(|s| {
        Duration::try_from_secs_f64(s).map_err(|_| config(format!("{name} must be >= 0 seconds")))
    })
    .transpose()
}

#[pymethods]
impl EndpointOptions {
    #[new]
    #[pyo3(signature = (
        *, offline=false, secret_key=None, alpns=Vec::new(), relay_mode=None, relay_urls=Vec::new(),
        relay_auth_token=None, relay_only=false, relay_ca_roots=Vec::new(), discovery=None, pkarr_url=None, dns_origin=None,
        dns_server=None, port_mapper=None, net_report_probes=None, bind_v4=None, bind_v6=None,
        congestion=None, receive_window=None, stream_receive_window=None, send_window=None,
        keep_alive=None, idle_timeout=None, initial_mtu=None, min_mtu=None, max_mtu=None,
        max_concurrent_bidi_streams=None, datagram_receive_buffer=None, datagram_send_buffer=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        offline: bool,
        secret_key: Option<Vec<u8>>,
        alpns: Vec<Vec<u8>>,
        relay_mode: Option<String>,
        relay_urls: Vec<String>,
        relay_auth_token: Option<String>,
        relay_only: bool,
        relay_ca_roots: Vec<Vec<u8>>,
        discovery: Option<bool>,
        pkarr_url: Option<String>,
        dns_origin: Option<String>,
        dns_server: Option<String>,
        port_mapper: Option<bool>,
        net_report_probes: Option<bool>,
        bind_v4: Option<String>,
        bind_v6: Option<String>,
        congestion: Option<String>,
        receive_window: Option<u64>,
        stream_receive_window: Option<u64>,
        send_window: Option<u64>,
        keep_alive: Option<f64>,
        idle_timeout: Option<f64>,
        initial_mtu: Option<u16>,
        min_mtu: Option<u16>,
        max_mtu: Option<u16>,
        max_concurrent_bidi_streams: Option<u32>,
        datagram_receive_buffer: Option<usize>,
        datagram_send_buffer: Option<usize>,
    ) -> PyResult<Self> {
        let mut o = if offline {
            CoreOptions::offline()
        } else {
            CoreOptions::default()
        };
        if let Some(key) = secret_key {
            let key: [u8; 32] = key.try_into().map_err(|k: Vec<u8>| {
                config(format!("a secret key is 32 bytes, this one is {}", k.len()))
            })?;
            o.secret_key = Some(key);
        }
        o.alpns = alpns;
        let mode = relay_mode.unwrap_or_else(|| {
            if !relay_urls.is_empty() {
                "custom".into()
            } else if offline {
                "disabled".into()
            } else {
                "default".into()
            }
        });
        o.relays = match mode.as_str() {
            "default" => Relays::Default,
            "disabled" => Relays::Disabled,
            "custom" => Relays::Custom {
                urls: relay_urls.clone(),
                auth_token: relay_auth_token.clone(),
            },
            other => {
                return Err(config(format!(
                    "relay_mode {other:?}: use \"default\", \"disabled\" or \"custom\""
                )))
            }
        };
        if !relay_urls.is_empty() && mode != "custom" {
            return Err(config("relay_urls need relay_mode=\"custom\""));
        }
        o.relay_only = relay_only;
        o.relay_ca_roots = relay_ca_roots;
        if let Some(v) = discovery {
            o.discovery = v;
        }
        o.pkarr_url = pkarr_url;
        o.dns_origin = dns_origin;
        o.dns_server = dns_server
            .map(|s| {
                s.parse::<SocketAddr>()
                    .map_err(|_| config(format!("dns_server {s:?} is not IP:PORT")))
            })
            .transpose()?;
        if let Some(v) = port_mapper {
            o.port_mapper = v;
        }
        if let Some(v) = net_report_probes {
            o.net_report_probes = v;
        }
        if let Some(s) = bind_v4 {
            o.bind_v4 = Some(
                s.parse()
                    .map_err(|_| config(format!("bind_v4 {s:?} is not an IPv4 IP:PORT")))?,
            );
        }
        if let Some(s) = bind_v6 {
            o.bind_v6 = Some(
                s.parse()
                    .map_err(|_| config(format!("bind_v6 {s:?} is not an IPv6 [IP]:PORT")))?,
            );
        }
        let t = &mut o.transport;
        t.congestion =
            Congestion::parse(congestion.as_deref().unwrap_or("default")).map_err(to_py)?;
        t.receive_window = receive_window;
        t.stream_receive_window = stream_receive_window;
        t.send_window = send_window;
        t.keep_alive = seconds(keep_alive, "keep_alive")?;
        t.idle_timeout = seconds(idle_timeout, "idle_timeout")?;
        t.initial_mtu = initial_mtu;
        t.min_mtu = min_mtu;
        t.max_mtu = max_mtu;
        t.max_concurrent_bidi_streams = max_concurrent_bidi_streams;
        t.datagram_receive_buffer = datagram_receive_buffer;
        t.datagram_send_buffer = datagram_send_buffer;
        // Check everything now (building touches no network), so errors surface here.
        o.builder().map_err(to_py)?;
        Ok(Self { inner: o })
    }

    fn __repr__(&self) -> String {
        let o = &self.inner;
        format!(
            "EndpointOptions(relays={:?}, relay_only={}, discovery={}, port_mapper={}, bind_v4={:?}, bind_v6={:?}, secret_key={})",
            match &o.relays {
                Relays::Default => "default".to_string(),
                Relays::Disabled => "disabled".to_string(),
                Relays::Custom { urls, .. } => urls.join(","),
            },
            o.relay_only,
            o.discovery,
            o.port_mapper,
            o.bind_v4.map(|a| a.to_string()),
            o.bind_v6.map(|a| a.to_string()),
            if o.secret_key.is_some() { "<set>" } else { "None" },
        )
    }
}

// ---- endpoint ------------------------------------------------------------------------

/// A bound iroh endpoint.
#[pyclass(frozen, module = "tunnelpy.worker._native")]
struct Endpoint {
    inner: net::Endpoint,
}

#[pymethods]
impl Endpoint {
    #[staticmethod]
    fn bind<'py>(py: Python<'py>, options: &EndpointOptions) -> PyResult<Bound<'py, PyAny>> {
        let options = options.inner.clone();
        spawn(py, async move {
            let inner = net::Endpoint::bind(&options).await.map_err(to_py)?;
            Ok(Endpoint { inner })
        })
    }

    fn endpoint_id(&self) -> String {
        self.inner.endpoint_id()
    }

    fn ticket(&self) -> String {
        self.inner.ticket()
    }

    fn bound_sockets(&self) -> Vec<String> {
        self.inner
            .bound_sockets()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// Direct addresses the endpoint currently advertises (`IP:PORT`).
    fn direct_addresses(&self) -> Vec<String> {
        self.inner
            .addr()
            .ip_addrs()
            .map(|a| a.to_string())
            .collect()
    }

    #[pyo3(signature = (peer, alpn, timeout=10.0))]
    fn connect<'py>(
        &self,
        py: Python<'py>,
        peer: String,
        alpn: Vec<u8>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ep = self.inner.clone();
        let timeout = seconds(Some(timeout), "timeout")?.expect("given");
        spawn(py, async move {
            let conn = ep.connect(&peer, &alpn, timeout).await.map_err(to_py)?;
            Ok(Connection { inner: conn })
        })
    }

    /// The next incoming connection, or None once the endpoint is closed.
    fn accept<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ep = self.inner.clone();
        spawn(py, async move {
            Ok(ep.accept().await.map(|inner| Connection { inner }))
        })
    }

    /// The next incoming connection before its handshake, or None once closed.
    fn accept_incoming<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ep = self.inner.clone();
        spawn(py, async move {
            Ok(ep.accept_incoming().await.map(|inner| Incoming {
                inner: Arc::new(inner),
            }))
        })
    }

    /// The home relays now: dicts of url, connected, error, auth_denied.
    fn home_relays<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        relays::home_relays(self.inner.raw())
            .into_iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("url", r.url)?;
                d.set_item("connected", r.connected)?;
                d.set_item("error", r.error)?;
                d.set_item("auth_denied", r.auth_denied)?;
                Ok(d)
            })
            .collect()
    }

    /// Waits until a home relay is connected (never returns with relays disabled).
    fn online<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ep = self.inner.clone();
        spawn(py, async move {
            ep.online().await;
            Ok(())
        })
    }

    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ep = self.inner.clone();
        spawn(py, async move {
            ep.close().await;
            Ok(())
        })
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

// ---- incoming ------------------------------------------------------------------------

/// An incoming connection before its handshake.
#[pyclass(frozen, module = "tunnelpy.worker._native")]
struct Incoming {
    inner: Arc<net::Incoming>,
}

#[pymethods]
impl Incoming {
    /// `IP:PORT`, `relay <url>` or `custom`.
    fn remote_addr(&self) -> String {
        self.inner.remote_addr().to_string()
    }

    #[pyo3(signature = (timeout=10.0))]
    fn accept<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let inc = self.inner.clone();
        let timeout = seconds(Some(timeout), "timeout")?.expect("given");
        spawn(py, async move {
            let conn = inc.accept(timeout).await.map_err(to_py)?;
            Ok(Connection { inner: conn })
        })
    }

    fn refuse(&self) {
        if runtime().is_ok() {
            let _guard = pyo3_async_runtimes::tokio::get_runtime().enter();
            self.inner.refuse();
        }
    }
}

// ---- connection ----------------------------------------------------------------------

/// One peer connection.
#[pyclass(frozen, module = "tunnelpy.worker._native")]
struct Connection {
    inner: net::Connection,
}

#[pymethods]
impl Connection {
    #[getter]
    fn remote_id(&self) -> String {
        self.inner.remote_id()
    }

    #[getter]
    fn alpn<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.alpn())
    }

    fn open_bi<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.inner.clone();
        spawn(py, async move {
            let (send, recv) = conn.open_bi().await.map_err(to_py)?;
            Ok(BiStream::new(conn, send, recv))
        })
    }

    fn accept_bi<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.inner.clone();
        spawn(py, async move {
            let (send, recv) = conn.accept_bi().await.map_err(to_py)?;
            Ok(BiStream::new(conn, send, recv))
        })
    }

    fn max_datagram_size(&self) -> Option<usize> {
        self.inner.max_datagram_size()
    }

    fn send_datagram<'py>(&self, py: Python<'py>, data: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.inner.clone();
        spawn(py, async move {
            conn.send_datagram(data.into()).await.map_err(to_py)
        })
    }

    fn recv_datagram<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.inner.clone();
        spawn(py, async move {
            let data = conn.recv_datagram().await.map_err(to_py)?;
            Ok(data.to_vec())
        })
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.stats());
        let d = PyDict::new(py);
        d.set_item("rtt_ms", s.rtt_ms)?;
        d.set_item("lost_packets", s.lost_packets)?;
        d.set_item("sent_packets", s.sent_packets)?;
        d.set_item("udp_tx_bytes", s.udp_tx_bytes)?;
        d.set_item("udp_rx_bytes", s.udp_rx_bytes)?;
        d.set_item("path", s.path.as_str())?;
        d.set_item("remote_addr", s.remote_addr)?;
        d.set_item("max_datagram_size", s.max_datagram_size)?;
        Ok(d)
    }

    /// Every open path, the selected one first: dicts of kind, remote, selected, rtt_ms.
    fn paths<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let list = py.detach(|| paths::paths(&self.inner));
        list.into_iter()
            .map(|p| {
                let d = PyDict::new(py);
                d.set_item("kind", p.kind.as_str())?;
                d.set_item("remote", p.remote)?;
                d.set_item("selected", p.selected)?;
                d.set_item("rtt_ms", p.rtt_ms)?;
                Ok(d)
            })
            .collect()
    }

    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.counters.snapshot();
        let d = PyDict::new(py);
        d.set_item("bytes_sent", c.bytes_sent)?;
        d.set_item("bytes_received", c.bytes_received)?;
        d.set_item("streams_open", c.streams_open)?;
        d.set_item("streams_total", c.streams_total)?;
        d.set_item("udp_flows", c.udp_flows)?;
        d.set_item("datagrams_dropped", c.datagrams_dropped)?;
        Ok(d)
    }

    #[pyo3(signature = (code=0, reason=""))]
    fn close(&self, code: u32, reason: &str) {
        self.inner.close(code, reason)
    }

    /// Waits until the connection is closed by either side; returns the reason.
    fn closed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.inner.clone();
        spawn(py, async move { Ok(conn.closed().await) })
    }

    /// Serves UDP on the receiver side until the connection ends (raises
    /// NativeConnectionLost). `stream` is the UDP_FRAMES stream, its header already
    /// written; `fd` a bound UDP socket, owned from now on.
    fn serve_udp_receiver<'py>(
        &self,
        py: Python<'py>,
        stream: &BiStream,
        fd: RawFd,
    ) -> PyResult<Bound<'py, PyAny>> {
        let socket = owned_udp(fd)?;
        let conn = self.inner.clone();
        let (send, recv) = (stream.send.clone(), stream.recv.clone());
        spawn(py, async move {
            let (send, recv) = take_both(&send, &recv).await?;
            let socket = tokio::net::UdpSocket::from_std(socket)
                .map_err(|e| NativeError::new_err(format!("cannot use the UDP socket: {e}")))?;
            udp::serve_receiver(conn, send, recv, socket)
                .await
                .map_err(to_py)
        })
    }

    /// Serves UDP on the worker side until the connection ends: one connected UDP socket
    /// per flow to the first of `addresses` (IP strings) that accepts, at `port`.
    fn serve_udp_worker<'py>(
        &self,
        py: Python<'py>,
        stream: &BiStream,
        addresses: Vec<String>,
        port: u16,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ips = addresses
            .iter()
            .map(|a| {
                a.parse::<IpAddr>()
                    .map_err(|_| config(format!("{a:?} is not an IP address")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let conn = self.inner.clone();
        let (send, recv) = (stream.send.clone(), stream.recv.clone());
        spawn(py, async move {
            let (send, recv) = take_both(&send, &recv).await?;
            udp::serve_worker(conn, send, recv, ips, port)
                .await
                .map_err(to_py)
        })
    }
}

// ---- streams -------------------------------------------------------------------------

type Half<T> = Arc<Mutex<Option<T>>>;

/// One QUIC bi-stream: small control messages from Python, or handed to `splice_tcp`
/// / the UDP servers, after which it belongs to Rust.
#[pyclass(frozen, module = "tunnelpy.worker._native")]
struct BiStream {
    conn: net::Connection,
    send: Half<SendStream>,
    recv: Half<RecvStream>,
}

impl BiStream {
    fn new(conn: net::Connection, send: SendStream, recv: RecvStream) -> Self {
        Self {
            conn,
            send: Arc::new(Mutex::new(Some(send))),
            recv: Arc::new(Mutex::new(Some(recv))),
        }
    }
}

fn gone() -> PyErr {
    NativeStreamReset::new_err("the stream was handed over or reset")
}

async fn take_both(
    send: &Half<SendStream>,
    recv: &Half<RecvStream>,
) -> PyResult<(SendStream, RecvStream)> {
    let (mut s, mut r) = (send.lock().await, recv.lock().await);
    match (s.take(), r.take()) {
        (Some(s), Some(r)) => Ok((s, r)),
        _ => Err(gone()),
    }
}

fn owned_fd(fd: RawFd, want: socket2::Type, what: &str) -> PyResult<socket2::Socket> {
    if fd < 0 {
        return Err(config(format!("{what}: invalid file descriptor {fd}")));
    }
    // SAFETY: the caller handed the descriptor over (socket.detach()); from here on it is
    // ours and is closed exactly once, by this value or what it becomes.
    let sock = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    match sock.r#type() {
        Ok(t) if t == want => {}
        _ => {
            return Err(config(format!(
                "{what}: descriptor {fd} is not the right kind of socket"
            )))
        }
    }
    sock.set_nonblocking(true)
        .map_err(|e| NativeError::new_err(format!("{what}: {e}")))?;
    Ok(sock)
}

fn owned_udp(fd: RawFd) -> PyResult<std::net::UdpSocket> {
    Ok(owned_fd(fd, socket2::Type::DGRAM, "serve_udp_receiver")?.into())
}

#[pymethods]
impl BiStream {
    /// Up to `max` bytes; b"" once the peer finished its side.
    #[pyo3(signature = (max=65536))]
    fn read<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let recv = self.recv.clone();
        spawn(py, async move {
            let mut guard = recv.lock().await;
            let recv = guard.as_mut().ok_or_else(gone)?;
            match recv.read_chunk(max.max(1)).await {
                Ok(Some(chunk)) => Ok(chunk.to_vec()),
                Ok(None) => Ok(Vec::new()),
                Err(e) => Err(to_py(splice::read_error(e))),
            }
        })
    }

    /// Returns once QUIC flow control accepted all of `data`.
    fn write_all<'py>(&self, py: Python<'py>, data: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        let send = self.send.clone();
        spawn(py, async move {
            let mut guard = send.lock().await;
            let send = guard.as_mut().ok_or_else(gone)?;
            send.write_chunk(data.into())
                .await
                .map_err(|e| to_py(splice::write_error(e)))
        })
    }

    /// Ends our side (FIN); reading goes on.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let send = self.send.clone();
        spawn(py, async move {
            let mut guard = send.lock().await;
            let send = guard.as_mut().ok_or_else(gone)?;
            let _ = send.finish();
            Ok(())
        })
    }

    /// Abandons both directions (reset + stop) with `code`. Never blocks.
    #[pyo3(signature = (code=0))]
    fn reset(&self, code: u32) -> PyResult<()> {
        let (send, recv) = (self.send.clone(), self.recv.clone());
        let abandon = async move {
            if let Some(mut s) = send.lock().await.take() {
                let _ = s.reset(VarInt::from_u32(code));
            }
            if let Some(mut r) = recv.lock().await.take() {
                let _ = r.stop(VarInt::from_u32(code));
            }
        };
        // A pending read/write holds its half; the reset lands as soon as it is released.
        runtime()?.spawn(abandon);
        Ok(())
    }

    /// Takes ownership of a connected TCP socket's descriptor (`sock.detach()`) and
    /// forwards both ways until both directions ended; returns `(sent, received)`:
    /// bytes socket -> stream and stream -> socket. Raises NativeStreamReset if either side
    /// reset (the other side then got a reset too) and NativeConnectionLost if the
    /// connection went away. Cancelling the awaitable aborts the splice the same way.
    fn splice_tcp<'py>(&self, py: Python<'py>, fd: RawFd) -> PyResult<Bound<'py, PyAny>> {
        let tcp: std::net::TcpStream = owned_fd(fd, socket2::Type::STREAM, "splice_tcp")?.into();
        let conn = self.conn.clone();
        let (send, recv) = (self.send.clone(), self.recv.clone());
        spawn(py, async move {
            let (send, recv) = take_both(&send, &recv).await?;
            let tcp = tokio::net::TcpStream::from_std(tcp)
                .map_err(|e| NativeError::new_err(format!("cannot use the TCP socket: {e}")))?;
            let done = splice::splice_tcp(tcp, send, recv, &conn.counters)
                .await
                .map_err(to_py)?;
            Ok((done.sent, done.received))
        })
    }
}

// ---- module --------------------------------------------------------------------------

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<EndpointOptions>()?;
    m.add_class::<Endpoint>()?;
    m.add_class::<Incoming>()?;
    m.add_class::<Connection>()?;
    m.add_class::<BiStream>()?;
    m.add_function(wrap_pyfunction!(set_worker_threads, m)?)?;
    m.add_function(wrap_pyfunction!(runtime_started, m)?)?;
    m.add_function(wrap_pyfunction!(ticket_with, m)?)?;
    m.add_function(wrap_pyfunction!(endpoint_id_of, m)?)?;
    m.add_function(wrap_pyfunction!(ticket_parts, m)?)?;
    let at_exit = wrap_pyfunction!(_at_exit, m)?;
    py.import("atexit")?.call_method1("register", (at_exit,))?;
    m.add("NativeError", py.get_type::<NativeError>())?;
    m.add("NativeConfigError", py.get_type::<NativeConfigError>())?;
    m.add("NativeConnectFailed", py.get_type::<NativeConnectFailed>())?;
    m.add(
        "NativeConnectionLost",
        py.get_type::<NativeConnectionLost>(),
    )?;
    m.add("NativeStreamReset", py.get_type::<NativeStreamReset>())?;
    m.add("RESET_CODE", splice::RESET_CODE)?;
    m.add("IROH_VERSION", "1.4.1")?;
    Ok(())
}
