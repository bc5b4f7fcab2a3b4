//! TLS on every listener and every internal client (rustls).
//!
//! Servers: `TLS_CERT_FILE` and `TLS_KEY_FILE` (PEM) turn TLS on for every
//! listener of the process (gRPC, the gateway, the admin port); with
//! `TLS_CLIENT_CA_FILE` clients must present a certificate from that CA
//! (mTLS), and the certificate's name (first DNS SAN, else common name) is
//! the caller's identity. The files are re-read when they change
//! (`TLS_RELOAD_INTERVAL_MS`, default 5000): certificates rotate without a
//! restart, and a file that no longer parses keeps the previous one in use.
//!
//! Clients (the gateway's upstreams, the orchestrator's calls to stamping,
//! the command line, `omninode health`): with `TLS_CA_FILE` they speak TLS
//! and trust that CA; `TLS_CLIENT_CERT_FILE` / `TLS_CLIENT_KEY_FILE` (default:
//! the server pair) are their certificate for mTLS; `TLS_SERVER_NAME`
//! overrides the name checked in the servers' certificates.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        RootCertStore, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    },
    server::TlsStream,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::{ConfigError, Env};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side's files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// TLS for this process's listeners: the current rustls configuration,
/// swapped when the files change.
#[derive(Clone)]
pub struct ServerTls {
    files: ServerFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
    reload_every: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files).finish()
    }
}

/// TLS for this process's clients.
#[derive(Clone, Default)]
pub struct ClientTls {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Both sides, read once at start-up.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub server: Option<ServerTls>,
    pub client: ClientTls,
}

impl TlsConfig {
    /// Reads and checks every file now: a file that does not parse refuses
    /// start-up with the variable's name.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let path = |name: &str| -> Result<Option<PathBuf>, ConfigError> { Ok(env.optional(name)?.map(PathBuf::from)) };
        let server_pair = env.pair("TLS_CERT_FILE", "TLS_KEY_FILE")?;
        let client_ca = path("TLS_CLIENT_CA_FILE")?;
        let reload_every = env.millis("TLS_RELOAD_INTERVAL_MS", 5_000)?;
        let server = match server_pair {
            None => {
                if client_ca.is_some() {
                    return Err(ConfigError::new("TLS_CLIENT_CA_FILE", "needs TLS_CERT_FILE and TLS_KEY_FILE"));
                }
                None
            }
            Some((cert, key)) => {
                let files = ServerFiles { cert: cert.into(), key: key.into(), client_ca };
                let config = build_server(&files).map_err(|(variable, problem)| ConfigError::new(variable, problem))?;
                Some(ServerTls { files, current: Arc::new(RwLock::new(Arc::new(config))), reload_every })
            }
        };
        let ca = match path("TLS_CA_FILE")? {
            None => None,
            Some(file) => {
                let pem = std::fs::read(&file)
                    .map_err(|e| ConfigError::new("TLS_CA_FILE", format!("{}: {e}", file.display())))?;
                parse_certs(&pem).map_err(|e| ConfigError::new("TLS_CA_FILE", e))?;
                Some(pem)
            }
        };
        let identity = match (env.pair("TLS_CLIENT_CERT_FILE", "TLS_CLIENT_KEY_FILE")?, &server) {
            (Some((cert, key)), _) => {
                Some(read_pair(cert.as_ref(), key.as_ref(), ("TLS_CLIENT_CERT_FILE", "TLS_CLIENT_KEY_FILE"))?)
            }
            (None, Some(server)) => {
                Some(read_pair(&server.files.cert, &server.files.key, ("TLS_CERT_FILE", "TLS_KEY_FILE"))?)
            }
            (None, None) => None,
        };
        let server_name = env.optional("TLS_SERVER_NAME")?;
        Ok(Self { server, client: ClientTls { ca, identity, server_name } })
    }
}

fn read_pair(cert: &Path, key: &Path, names: (&str, &str)) -> Result<(Vec<u8>, Vec<u8>), ConfigError> {
    let cert_pem = std::fs::read(cert).map_err(|e| ConfigError::new(names.0, format!("{}: {e}", cert.display())))?;
    let key_pem = std::fs::read(key).map_err(|e| ConfigError::new(names.1, format!("{}: {e}", key.display())))?;
    parse_certs(&cert_pem).map_err(|e| ConfigError::new(names.0, e))?;
    PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| ConfigError::new(names.1, format!("not a PEM private key: {e}")))?;
    Ok((cert_pem, key_pem))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// The rustls configuration of `files`, or which variable's file is wrong.
fn build_server(files: &ServerFiles) -> Result<ServerConfig, (&'static str, String)> {
    let read = |variable: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| (variable, format!("{}: {e}", path.display())))
    };
    let certs = parse_certs(&read("TLS_CERT_FILE", &files.cert)?).map_err(|e| ("TLS_CERT_FILE", e))?;
    let key = PrivateKeyDer::from_pem_slice(&read("TLS_KEY_FILE", &files.key)?)
        .map_err(|e| ("TLS_KEY_FILE", format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("TLS_CERT_FILE", e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in parse_certs(&read("TLS_CLIENT_CA_FILE", path)?).map_err(|e| ("TLS_CLIENT_CA_FILE", e))? {
                roots.add(cert).map_err(|e| ("TLS_CLIENT_CA_FILE", format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ("TLS_CLIENT_CA_FILE", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ("TLS_KEY_FILE", format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl ServerTls {
    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("TLS configuration lock").clone())
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-reads the files whenever one changes, until `stop`.
    pub fn spawn_reload(&self, stop: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut seen = tls.modified();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(tls.reload_every) => {}
                }
                let now = tls.modified();
                if now == seen {
                    continue;
                }
                match build_server(&tls.files) {
                    Ok(config) => {
                        *tls.current.write().expect("TLS configuration lock") = Arc::new(config);
                        seen = now;
                        metrics::counter!("tls_reloads_total").increment(1);
                        tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded");
                    }
                    // Mid-rotation (one file written, not the other): try again next time.
                    Err((variable, problem)) => {
                        tracing::warn!(variable, %problem, "TLS files changed but do not load; keeping the previous ones")
                    }
                }
            }
        });
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        let files = [Some(&self.files.cert), Some(&self.files.key), self.files.client_ca.as_ref()];
        files.into_iter().flatten().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
    }

    /// Accepted TLS connections of `listener` (handshakes run concurrently;
    /// a failed or slow one is dropped) until `stop`.
    pub fn incoming(
        &self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.closed() => return,
                    accepted = crate::server::accept(&listener) => accepted,
                };
                let (acceptor, tx) = (tls.acceptor(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(err)) => {
                            metrics::counter!("tls_handshake_failures_total").increment(1);
                            tracing::debug!(%peer, %err, "TLS handshake refused");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

impl ClientTls {
    /// Whether clients speak TLS (`TLS_CA_FILE` is set).
    pub fn is_enabled(&self) -> bool {
        self.ca.is_some()
    }

    /// A rustls configuration for clients that are not tonic's (HTTP to the
    /// admin port): `None` when TLS is off.
    pub fn rustls(&self) -> Option<Result<tokio_rustls::rustls::ClientConfig, String>> {
        let ca = self.ca.as_ref()?;
        Some(client_config(ca, self.identity.as_ref().map(|(cert, key)| (cert.as_slice(), key.as_slice()))))
    }

    /// `TLS_SERVER_NAME`, when set.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// `url` with the scheme clients must use (`https` when TLS is on).
    pub fn url(&self, url: &str) -> String {
        match (self.is_enabled(), url.strip_prefix("http://")) {
            (true, Some(rest)) => format!("https://{rest}"),
            _ => url.to_owned(),
        }
    }

    /// An endpoint for `url`: `https` and TLS to the URL's host when TLS is on.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let url = self.url(url);
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| format!("{url:?}: {e}"))?;
        let host = endpoint.uri().host().unwrap_or_default().to_owned();
        self.apply(endpoint, &host).map_err(|e| format!("{url:?}: {e}"))
    }

    /// `endpoint` speaking TLS to a server named `host` (or `TLS_SERVER_NAME`)
    /// when TLS is on; unchanged otherwise.
    pub fn apply(&self, endpoint: Endpoint, host: &str) -> Result<Endpoint, tonic::transport::Error> {
        let Some(ca) = &self.ca else { return Ok(endpoint) };
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(self.server_name.clone().unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned()));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        endpoint.tls_config(config)
    }
}

/// A rustls client configuration trusting the CA in `ca_pem`, presenting
/// `identity` (certificate and key PEM) when given.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem)? {
        roots.add(cert).map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("not a PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(parse_certs(cert)?, key)
                .map_err(|e| format!("the key does not match the certificate: {e}"))
        }
    }
}

/// A client configuration that trusts nothing (HTTPS without a configured CA fails, as it should).
pub(crate) fn no_roots() -> tokio_rustls::rustls::ClientConfig {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// The name a verified client certificate gives its holder: its first DNS
/// subject alternative name, else its common name.
pub fn certificate_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                return Some((*dns).to_owned());
            }
        }
    }
    cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_files(dir: &Path, name: &str, pair: (String, String)) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, pair.0).unwrap();
        std::fs::write(&key, pair.1).unwrap();
        (cert, key)
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn files_that_do_not_parse_name_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_files(dir.path(), "server", self_signed("localhost"));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let env = |pairs: &[(&str, &Path)]| {
            Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.display().to_string())))
        };
        assert!(
            TlsConfig::from_env(&env(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &key)])).unwrap().server.is_some()
        );
        for (pairs, variable) in [
            (vec![("TLS_CERT_FILE", junk.as_path()), ("TLS_KEY_FILE", &key)], "TLS_CERT_FILE"),
            (vec![("TLS_CERT_FILE", cert.as_path()), ("TLS_KEY_FILE", &junk)], "TLS_KEY_FILE"),
            (vec![("TLS_CERT_FILE", cert.as_path())], "TLS_KEY_FILE"),
            (
                vec![("TLS_CERT_FILE", cert.as_path()), ("TLS_KEY_FILE", &key), ("TLS_CLIENT_CA_FILE", &junk)],
                "TLS_CLIENT_CA_FILE",
            ),
            (vec![("TLS_CA_FILE", junk.as_path())], "TLS_CA_FILE"),
            (vec![("TLS_CLIENT_CA_FILE", cert.as_path())], "TLS_CLIENT_CA_FILE"),
        ] {
            let err = TlsConfig::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(err.variable, variable, "{pairs:?}: {err}");
        }
    }

    #[test]
    fn a_certificate_names_its_holder() {
        let (pem, _) = self_signed("orchestrator.omninode");
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(certificate_name(&der).as_deref(), Some("orchestrator.omninode"));
    }
}
