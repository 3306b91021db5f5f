//! Endpoint options as a plain struct, and the one place that turns them into an iroh
//! [`Builder`](iroh::endpoint::Builder). Nothing here touches the network.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use iroh::address_lookup::{DnsAddressLookup, PkarrPublisher, PkarrResolver};
use iroh::dns::DnsResolver;
use iroh::endpoint::{
    presets, Builder, IdleTimeout, MtuDiscoveryConfig, PortmapperConfig, QuicTransportConfig,
    VarInt,
};
use iroh::tls::CaTlsConfig;
use iroh::{NetReportConfig, RelayConfig, RelayMap, RelayMode, RelayUrl, SecretKey};
use noq_proto::congestion::{Bbr3Config, CubicConfig, NewRenoConfig};
use rustls_pki_types::CertificateDer;

use crate::error::{Error, Result};

/// Which relay servers the endpoint may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Relays {
    /// n0's public relays.
    #[default]
    Default,
    /// No relay at all: only direct addresses given to `connect` are used.
    Disabled,
    /// These relay URLs, each sent `auth_token` if one is set.
    Custom {
        urls: Vec<String>,
        auth_token: Option<String>,
    },
}

/// The QUIC congestion controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Congestion {
    /// iroh's default (Cubic).
    #[default]
    Default,
    Cubic,
    NewReno,
    Bbr3,
}

impl Congestion {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "" | "default" => Ok(Self::Default),
            "cubic" => Ok(Self::Cubic),
            "newreno" | "new_reno" => Ok(Self::NewReno),
            "bbr" | "bbr3" => Ok(Self::Bbr3),
            other => Err(Error::Config(format!(
                "unknown congestion controller {other:?}: use cubic, newreno or bbr3"
            ))),
        }
    }
}

/// QUIC transport settings; `None` keeps iroh's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransportOptions {
    pub congestion: Congestion,
    /// Connection-wide receive window, bytes.
    pub receive_window: Option<u64>,
    /// Per-stream receive window, bytes.
    pub stream_receive_window: Option<u64>,
    /// Connection-wide send buffer, bytes.
    pub send_window: Option<u64>,
    pub keep_alive: Option<Duration>,
    /// Zero disables the idle timeout.
    pub idle_timeout: Option<Duration>,
    pub initial_mtu: Option<u16>,
    pub min_mtu: Option<u16>,
    /// Upper bound of path-MTU discovery; zero disables discovery.
    pub max_mtu: Option<u16>,
    pub max_concurrent_bidi_streams: Option<u32>,
    pub datagram_receive_buffer: Option<usize>,
    pub datagram_send_buffer: Option<usize>,
}

/// Everything that decides how an endpoint reaches the network.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointOptions {
    /// 32 secret-key bytes; `None` generates a fresh identity.
    pub secret_key: Option<[u8; 32]>,
    /// ALPNs accepted on incoming connections (outgoing ones name theirs in `connect`).
    pub alpns: Vec<Vec<u8>>,
    pub relays: Relays,
    /// Only relayed paths: no IP socket at all.
    pub relay_only: bool,
    /// DER certificates trusted for the relays' TLS (HTTPS, QUIC address discovery) besides
    /// the embedded web roots: a private relay with its own CA.
    pub relay_ca_roots: Vec<Vec<u8>>,
    /// Publish to and resolve through pkarr/DNS (n0's servers unless overridden below).
    pub discovery: bool,
    pub pkarr_url: Option<String>,
    pub dns_origin: Option<String>,
    /// A DNS server (`IP:PORT`) to use instead of the system's.
    pub dns_server: Option<SocketAddr>,
    /// UPnP / NAT-PMP / PCP port mapping.
    pub port_mapper: bool,
    /// Relay latency probes (HTTPS) and the captive-portal check.
    pub net_report_probes: bool,
    /// Bind IPv4 here only (no `0.0.0.0`); with `bind_v6` unset no IPv6 socket is opened.
    pub bind_v4: Option<SocketAddrV4>,
    /// Bind IPv6 here only (no `[::]`); with `bind_v4` unset no IPv4 socket is opened.
    pub bind_v6: Option<SocketAddrV6>,
    pub transport: TransportOptions,
}

impl Default for EndpointOptions {
    /// iroh's own defaults: n0 relays, discovery, port mapping, wildcard sockets.
    fn default() -> Self {
        Self {
            secret_key: None,
            alpns: Vec::new(),
            relays: Relays::Default,
            relay_only: false,
            relay_ca_roots: Vec::new(),
            discovery: true,
            pkarr_url: None,
            dns_origin: None,
            dns_server: None,
            port_mapper: true,
            net_report_probes: true,
            bind_v4: None,
            bind_v6: None,
            transport: TransportOptions::default(),
        }
    }
}

impl EndpointOptions {
    /// Sends nothing but to the addresses it is given: no relay, no discovery, no port
    /// mapper, no probes; bound to 127.0.0.1 only.
    pub fn offline() -> Self {
        Self {
            relays: Relays::Disabled,
            discovery: false,
            port_mapper: false,
            net_report_probes: false,
            bind_v4: Some(SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0)),
            ..Self::default()
        }
    }

    /// Checks the options and builds the iroh endpoint builder.
    pub fn builder(&self) -> Result<Builder> {
        if self.relay_only && self.relays == Relays::Disabled {
            return Err(Error::Config(
                "relay_only needs relays: it cannot be combined with relays disabled".into(),
            ));
        }
        let mut b = Builder::new(presets::Minimal).transport_config(self.transport.build()?);
        if let Some(key) = self.secret_key {
            b = b.secret_key(SecretKey::from_bytes(&key));
        }
        b = b.alpns(self.alpns.clone());
        b = b.relay_mode(self.relay_mode()?);
        if !self.relay_ca_roots.is_empty() {
            let roots = self
                .relay_ca_roots
                .iter()
                .map(|der| CertificateDer::from(der.clone()));
            b = b.ca_tls_config(CaTlsConfig::embedded().with_extra_roots(roots));
        }
        b = b.portmapper_config(if self.port_mapper {
            PortmapperConfig::default()
        } else {
            PortmapperConfig::Disabled
        });
        if !self.net_report_probes {
            b = b.net_report_config(NetReportConfig::minimal());
        }
        if let Some(server) = self.dns_server {
            b = b.dns_resolver(DnsResolver::with_nameserver(server));
        }
        if self.discovery {
            b = self.add_discovery(b)?;
        } else if self.pkarr_url.is_some() || self.dns_origin.is_some() {
            return Err(Error::Config(
                "pkarr_url / dns_origin need discovery enabled".into(),
            ));
        }
        if self.relay_only {
            b = b.clear_ip_transports();
        } else if self.bind_v4.is_some() || self.bind_v6.is_some() {
            b = b.clear_ip_transports();
            if let Some(v4) = self.bind_v4 {
                b = b.bind_addr(SocketAddr::V4(v4)).map_err(bind_error)?;
            }
            if let Some(v6) = self.bind_v6 {
                b = b.bind_addr(SocketAddr::V6(v6)).map_err(bind_error)?;
            }
        }
        Ok(b)
    }

    fn relay_mode(&self) -> Result<RelayMode> {
        match &self.relays {
            Relays::Default => Ok(RelayMode::Default),
            Relays::Disabled => Ok(RelayMode::Disabled),
            Relays::Custom { urls, auth_token } => {
                if urls.is_empty() {
                    return Err(Error::Config("custom relays need at least one URL".into()));
                }
                let map = RelayMap::empty();
                for text in urls {
                    let url: RelayUrl = text.parse().map_err(|_| {
                        Error::Config(format!("relay URL {text:?} is not a valid URL"))
                    })?;
                    let mut config = RelayConfig::from(url.clone());
                    if let Some(token) = auth_token {
                        config = config.with_auth_token(token.clone());
                    }
                    map.insert(url, Arc::new(config));
                }
                Ok(RelayMode::Custom(map))
            }
        }
    }

    fn add_discovery(&self, mut b: Builder) -> Result<Builder> {
        let publisher = match &self.pkarr_url {
            Some(url) => {
                let url = parse_url(url, "pkarr_url")?;
                b = b.address_lookup(PkarrResolver::builder(url.clone()));
                PkarrPublisher::builder(url)
            }
            None => {
                b = b.address_lookup(PkarrResolver::n0_dns());
                PkarrPublisher::n0_dns()
            }
        };
        b = b.address_lookup(publisher);
        b = b.address_lookup(match &self.dns_origin {
            Some(origin) => DnsAddressLookup::builder(origin.clone()),
            None => DnsAddressLookup::n0_dns(),
        });
        Ok(b)
    }
}

impl TransportOptions {
    pub fn build(&self) -> Result<QuicTransportConfig> {
        let mut t = QuicTransportConfig::builder();
        match self.congestion {
            Congestion::Default => {}
            Congestion::Cubic => {
                t = t.congestion_controller_factory(Arc::new(CubicConfig::default()))
            }
            Congestion::NewReno => {
                t = t.congestion_controller_factory(Arc::new(NewRenoConfig::default()))
            }
            Congestion::Bbr3 => {
                t = t.congestion_controller_factory(Arc::new(Bbr3Config::default()))
            }
        }
        if let Some(v) = self.receive_window {
            t = t.receive_window(varint(v, "receive_window")?);
        }
        if let Some(v) = self.stream_receive_window {
            t = t.stream_receive_window(varint(v, "stream_receive_window")?);
        }
        if let Some(v) = self.send_window {
            t = t.send_window(v);
        }
        if let Some(v) = self.keep_alive {
            t = t.keep_alive_interval(v);
        }
        if let Some(v) = self.idle_timeout {
            let timeout = if v.is_zero() {
                None
            } else {
                Some(
                    IdleTimeout::try_from(v)
                        .map_err(|_| Error::Config(format!("idle_timeout {v:?} is too large")))?,
                )
            };
            t = t.max_idle_timeout(timeout);
            if let Some(path_idle) = path_idle_timeout(v) {
                // iroh abandons a silent path after 15 s; with a connection idle timeout at or
                // below that, a dead direct path would take the whole connection with it
                // instead of handing its traffic to the relay path (or another direct one).
                t = t
                    .default_path_max_idle_timeout(path_idle)
                    .default_path_keep_alive_interval(path_idle / 3);
            }
        }
        let (initial, min) = (self.initial_mtu, self.min_mtu);
        if let (Some(i), Some(m)) = (initial, min) {
            if i < m {
                return Err(Error::Config(format!(
                    "initial_mtu {i} is below min_mtu {m}"
                )));
            }
        }
        for (name, v) in [("initial_mtu", initial), ("min_mtu", min)] {
            if matches!(v, Some(v) if v < 1200) {
                return Err(Error::Config(format!(
                    "{name} must be at least 1200 (QUIC's minimum)"
                )));
            }
        }
        if let Some(v) = min {
            t = t.min_mtu(v);
        }
        if let Some(v) = initial {
            t = t.initial_mtu(v);
        }
        if let Some(v) = self.max_mtu {
            if v == 0 {
                t = t.mtu_discovery_config(None);
            } else {
                let mut mtu = MtuDiscoveryConfig::default();
                mtu.upper_bound(v);
                t = t.mtu_discovery_config(Some(mtu));
            }
        }
        if let Some(v) = self.max_concurrent_bidi_streams {
            t = t.max_concurrent_bidi_streams(VarInt::from_u32(v));
        }
        if let Some(v) = self.datagram_receive_buffer {
            t = t.datagram_receive_buffer_size(Some(v));
        }
        if let Some(v) = self.datagram_send_buffer {
            t = t.datagram_send_buffer_size(v);
        }
        Ok(t.build())
    }
}

/// The per-path idle timeout for a connection idle timeout `idle`: half of it, at most
/// iroh's own 15 s; `None` (iroh's default) when the connection never idles out.
pub fn path_idle_timeout(idle: Duration) -> Option<Duration> {
    if idle.is_zero() {
        return None;
    }
    Some((idle / 2).min(Duration::from_secs(15)))
}

fn varint(v: u64, name: &str) -> Result<VarInt> {
    VarInt::from_u64(v).map_err(|_| Error::Config(format!("{name} {v} is too large")))
}

fn parse_url(text: &str, name: &str) -> Result<url::Url> {
    text.parse()
        .map_err(|_| Error::Config(format!("{name} {text:?} is not a valid URL")))
}

fn bind_error(err: iroh::endpoint::InvalidSocketAddr) -> Error {
    Error::Config(format!("bind address rejected: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_names() {
        assert_eq!(Congestion::parse("bbr3").unwrap(), Congestion::Bbr3);
        assert!(matches!(Congestion::parse("vegas"), Err(Error::Config(_))));
    }

    #[test]
    fn relay_only_without_relays_is_a_config_error() {
        let opts = EndpointOptions {
            relay_only: true,
            ..EndpointOptions::offline()
        };
        assert!(matches!(opts.builder(), Err(Error::Config(_))));
    }

    #[test]
    fn bad_relay_url_is_a_config_error() {
        let opts = EndpointOptions {
            relays: Relays::Custom {
                urls: vec!["not a url".into()],
                auth_token: None,
            },
            ..EndpointOptions::offline()
        };
        let err = opts.builder().unwrap_err();
        assert!(err.message().contains("not a url"), "{err}");
    }

    #[test]
    fn mtu_bounds_are_checked() {
        let t = TransportOptions {
            initial_mtu: Some(1300),
            min_mtu: Some(1400),
            ..Default::default()
        };
        assert!(matches!(t.build(), Err(Error::Config(_))));
        let t = TransportOptions {
            min_mtu: Some(1000),
            ..Default::default()
        };
        assert!(matches!(t.build(), Err(Error::Config(_))));
    }

    #[test]
    fn a_path_idles_out_before_its_connection() {
        assert_eq!(
            path_idle_timeout(Duration::from_secs(15)),
            Some(Duration::from_millis(7500))
        );
        assert_eq!(
            path_idle_timeout(Duration::from_secs(300)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(path_idle_timeout(Duration::ZERO), None);
    }

    #[test]
    fn all_transport_knobs_build() {
        let t = TransportOptions {
            congestion: Congestion::Bbr3,
            receive_window: Some(16 << 20),
            stream_receive_window: Some(8 << 20),
            send_window: Some(16 << 20),
            keep_alive: Some(Duration::from_secs(5)),
            idle_timeout: Some(Duration::from_secs(30)),
            initial_mtu: Some(1280),
            min_mtu: Some(1200),
            max_mtu: Some(1452),
            max_concurrent_bidi_streams: Some(1000),
            datagram_receive_buffer: Some(1 << 20),
            datagram_send_buffer: Some(1 << 20),
        };
        t.build().unwrap();
    }
}
