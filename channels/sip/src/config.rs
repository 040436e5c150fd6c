//! What the daemon tells the voice channel: where to listen, whom to trust, limits.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    Udp,
    Tcp,
    /// SIP over TLS (advisors' phones outside the council's network); needs
    /// [`SipConfig::tls`].
    Tls,
}

impl SipTransport {
    pub(crate) fn to_stack(self) -> rsipstack::sip::Transport {
        match self {
            SipTransport::Udp => rsipstack::sip::Transport::Udp,
            SipTransport::Tcp => rsipstack::sip::Transport::Tcp,
            SipTransport::Tls => rsipstack::sip::Transport::Tls,
        }
    }

    pub(crate) fn from_stack(t: rsipstack::sip::Transport) -> Option<SipTransport> {
        match t {
            rsipstack::sip::Transport::Udp => Some(SipTransport::Udp),
            rsipstack::sip::Transport::Tcp => Some(SipTransport::Tcp),
            rsipstack::sip::Transport::Tls => Some(SipTransport::Tls),
            _ => None,
        }
    }

    /// How it is written in configuration and stored with a registration.
    pub fn as_str(self) -> &'static str {
        match self {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
            SipTransport::Tls => "tls",
        }
    }

    pub fn from_name(name: &str) -> Option<SipTransport> {
        [SipTransport::Udp, SipTransport::Tcp, SipTransport::Tls]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// Carried on a connection (TCP or TLS), rather than in datagrams.
    pub fn is_stream(self) -> bool {
        self != SipTransport::Udp
    }
}

/// A listener, written `udp:127.0.0.1:5060`, `tcp:0.0.0.0:5060` or `tls:0.0.0.0:5061`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipListen {
    pub transport: SipTransport,
    pub addr: SocketAddr,
}

impl SipListen {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (t, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: write udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT"))?;
        let transport = SipTransport::from_name(t)
            .ok_or_else(|| format!("{s:?}: the transport is udp, tcp or tls"))?;
        let addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an address:port"))?;
        Ok(SipListen { transport, addr })
    }
}

/// A network calls are accepted from, written `192.0.2.0/24` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunkNetwork {
    base: IpAddr,
    prefix: u8,
}

impl TrunkNetwork {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let base: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or network"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(TrunkNetwork { base, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.base, ip) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(b) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(b) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SipConfig {
    pub listen: Vec<SipListen>,
    pub trunks: Vec<TrunkNetwork>,
    /// RTP uses even ports in this range, RTCP the odd port above each.
    pub rtp_ports: (u16, u16),
    /// The address RTP sockets bind to and the SDP advertises.
    pub media_ip: IpAddr,
    pub max_calls: usize,
    pub max_call_duration: Duration,
    /// How long a call rings before it is answered (a CANCEL in this time ends it).
    pub ring: Duration,
    /// Timer H (64 × T1, 32 s by RFC 3261): an answered call whose ACK has not come by
    /// then never existed.
    pub ack_timeout: Duration,
    /// A caller who should be sending audio and has sent none for this long is hung up.
    pub media_timeout: Duration,
    /// Session timers (RFC 4028): the shortest interval a caller may ask for (422
    /// below it; never under 90 s) and the longest we agree to.
    pub session_min_seconds: u32,
    pub session_max_seconds: u32,
    /// INVITEs accepted per second from one source address (bursts of twice that).
    pub invites_per_second: u32,
    /// Calls being set up (ringing, or answered and awaiting ACK) from one source.
    pub max_pending_per_source: usize,
    pub tcp: crate::tcp::TcpLimits,
    /// Answer OPTIONS from anyone (for monitoring from outside the trunks); by default
    /// only trunks get an answer, everyone else 403.
    pub options_from_anywhere: bool,
    /// The certificate TLS listeners present; required when one is configured.
    pub tls: Option<TlsIdentity>,
}

/// Our certificate chain and its private key, read from PEM once at start-up.
#[derive(Clone)]
pub struct TlsIdentity {
    pub(crate) chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub(crate) key: std::sync::Arc<rustls::pki_types::PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsIdentity({} certificates, key ***)", self.chain.len())
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain (ours first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1), checking that rustls accepts the pair.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsIdentity, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate is not PEM: {e}"))?;
        if chain.is_empty() {
            return Err("no certificate in the certificate file".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("the private key is not PEM: {e}"))?;
        let identity = TlsIdentity {
            chain,
            key: std::sync::Arc::new(key),
        };
        identity.server_config()?;
        Ok(identity)
    }

    /// What each TLS listener accepts with: TLS 1.2 and 1.3 by rustls's safe defaults,
    /// no client certificates (phones authenticate by digest).
    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), self.key.clone_key())
        .map_err(|e| format!("the certificate and key do not go together: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_networks() {
        let l = SipListen::parse("tcp:127.0.0.1:5060").unwrap();
        assert_eq!((l.transport, l.addr.port()), (SipTransport::Tcp, 5060));
        assert!(SipListen::parse("sctp:127.0.0.1:5060").is_err());
        let l = SipListen::parse("TLS:[::1]:5061").unwrap();
        assert_eq!((l.transport, l.addr.port()), (SipTransport::Tls, 5061));
        assert!(TlsIdentity::from_pem(b"", b"").is_err());
        assert!(
            TlsIdentity::from_pem(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                b"x"
            )
            .is_err()
        );
        let n = TrunkNetwork::parse("192.0.2.0/24").unwrap();
        assert!(n.contains("192.0.2.77".parse().unwrap()));
        assert!(!n.contains("192.0.3.1".parse().unwrap()));
        assert!(
            TrunkNetwork::parse("127.0.0.1")
                .unwrap()
                .contains("::ffff:127.0.0.1".parse().unwrap())
        );
        assert!(
            TrunkNetwork::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(TrunkNetwork::parse("10.0.0.0/33").is_err());
    }
}
