//! TLS on the listeners: the certificate and key from `[tls]`, client
//! certificates checked against `client_ca` when it is set, and all of it
//! read again on reload.
//!
//! Senders send their Meta access tokens with every request, so across
//! hosts the proxy listener must be HTTPS. The files are re-read on every
//! reload (SIGHUP, `/admin/reload`): a renewed certificate is put in place
//! and a reload makes new connections use it, while open connections keep
//! the session they made. Both listeners offer ALPN `h2` and `http/1.1`.
//!
//! A client certificate can name a client: a DNS name in it (subject
//! alternative name) equal to a `[clients.<name>]` table's name makes the
//! connection's requests that client's ([`PeerNames`], read by
//! `client::Sender`). The admin listener never asks for one, so that
//! orchestrators' probes, which present none, get through.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, TlsConfig};

/// Most DNS names of a client certificate kept for naming its client.
const MAX_PEER_NAMES: usize = 16;

/// The certificates in the PEM file at `path` (the config's `key` names
/// it in errors): at least one, or an error.
pub(crate) fn pem_certificates(
    key: &str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| ConfigError::new(key, format!("{path}: {err}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(key, format!("{path}: no certificates")));
    }
    Ok(certs)
}

/// Adds the CA certificates of the PEM file at `path` to `roots`.
pub(crate) fn add_pem_roots(
    roots: &mut RootCertStore,
    key: &str,
    path: &str,
) -> Result<(), ConfigError> {
    for cert in pem_certificates(key, path)? {
        roots
            .add(cert)
            .map_err(|err| ConfigError::new(key, format!("{path}: {err}")))?;
    }
    Ok(())
}

/// The server configs of both listeners, swapped whole on reload.
pub struct Terminator {
    proxy: ArcSwap<ServerConfig>,
    admin: ArcSwap<ServerConfig>,
    /// Session tickets, kept across reloads so that clients resume their
    /// sessions after a certificate renewal too.
    tickets: Tickets,
}

/// Makes stateless session tickets (keys random per process, rotated every
/// 6 hours by rustls), as nginx's `ssl_session_tickets on` default does: a
/// client that reconnects resumes its session, and skips the certificate
/// signature and the server's session memory. rustls' default (tickets that
/// name a session in a 256-entry cache, each usable once) gave an OpenSSL
/// client, which resumes with one ticket again and again, a full handshake
/// from its second reconnection on.
type Tickets = Arc<dyn rustls::server::ProducesTickets>;

impl Terminator {
    /// Reads the files `config` names; `None` when TLS is off.
    pub fn new(config: &TlsConfig) -> Result<Option<Arc<Self>>, ConfigError> {
        if !config.enabled() {
            return Ok(None);
        }
        let tickets = rustls::crypto::ring::Ticketer::new()
            .map_err(|err| ConfigError::new("tls", err.to_string()))?;
        let (proxy, admin) = server_configs(config, &tickets)?;
        Ok(Some(Arc::new(Terminator {
            proxy: ArcSwap::from_pointee(proxy),
            admin: ArcSwap::from_pointee(admin),
            tickets,
        })))
    }

    /// Reads the files again and, if they are good, uses them for new
    /// connections; if not, the ones in use stay.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), ConfigError> {
        let (proxy, admin) = server_configs(config, &self.tickets)?;
        self.proxy.store(Arc::new(proxy));
        self.admin.store(Arc::new(admin));
        Ok(())
    }

    /// The handshake of a new proxy connection.
    pub(crate) fn proxy_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.proxy.load_full())
    }

    /// The handshake of a new admin connection.
    pub(crate) fn admin_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.admin.load_full())
    }
}

/// The proxy's config (asking for a client certificate when `client_ca`
/// is set) and the admin listener's (never asking).
fn server_configs(
    config: &TlsConfig,
    tickets: &Tickets,
) -> Result<(ServerConfig, ServerConfig), ConfigError> {
    let tls_error =
        |key: &'static str| move |err: rustls::Error| ConfigError::new(key, err.to_string());
    let chain = pem_certificates("tls.cert", &config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|err| ConfigError::new("tls.key", format!("{}: {err}", config.key)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = || {
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error("tls"))
    };
    let proxy_builder = match config.client_ca.as_str() {
        "" => builder()?.with_no_client_auth(),
        path => {
            let mut roots = RootCertStore::empty();
            add_pem_roots(&mut roots, "tls.client_ca", path)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|err| ConfigError::new("tls.client_ca", err.to_string()))?;
            builder()?.with_client_cert_verifier(verifier)
        }
    };
    let mut proxy = proxy_builder
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(tls_error("tls.key"))?;
    let mut admin = builder()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_error("tls.key"))?;
    for config in [&mut proxy, &mut admin] {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer = tickets.clone();
    }
    Ok((proxy, admin))
}

/// The DNS names of the certificate a client presented, verified against
/// `client_ca` in the handshake; put in each of its requests' extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNames(Arc<[Box<str>]>);

impl PeerNames {
    /// The names of the certificate `connection`'s client presented, if any.
    pub(crate) fn of(connection: &ServerConnection) -> Option<Self> {
        let certificate = connection.peer_certificates()?.first()?;
        // Parsed only for its names: the verifier has checked it already.
        let parsed = webpki::EndEntityCert::try_from(certificate).ok()?;
        let names: Arc<[Box<str>]> = parsed
            .valid_dns_names()
            .take(MAX_PEER_NAMES)
            .map(Box::from)
            .collect();
        (!names.is_empty()).then_some(PeerNames(names))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|name| &**name)
    }

    #[cfg(test)]
    pub(crate) fn from_names(names: &[&str]) -> Self {
        PeerNames(names.iter().map(|name| Box::from(*name)).collect())
    }
}
