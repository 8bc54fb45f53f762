//! HTTPS for app traffic: the server name a client asks for (SNI) selects
//! the app (as a Host does) and the certificate set for that name through
//! `/1.2/apps/{app}/certificate`. A name without a certificate fails the
//! handshake. Certificates are parsed once and kept until they change.

use crate::routers::tls::load;
use crate::server::Server;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to say hello and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Server configurations by name, with the PEM they were made from.
#[derive(Default)]
pub(super) struct Certificates {
    by_name: Mutex<HashMap<String, (String, String, Arc<ServerConfig>)>>,
}

impl Certificates {
    /// The configuration serving `name` with `certificate`/`key`, made once.
    fn config(&self, name: &str, certificate: &str, key: &str) -> Result<Arc<ServerConfig>, String> {
        if let Some((c, k, config)) = self.by_name.lock().unwrap().get(name)
            && c == certificate
            && k == key
        {
            return Ok(config.clone());
        }
        let certified = load(certificate, key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let mut map = self.by_name.lock().unwrap();
        if map.len() >= 10_000 {
            map.clear();
        }
        map.insert(name.to_string(), (certificate.to_string(), key.to_string(), config.clone()));
        Ok(config)
    }
}

/// Reads the client hello, finds the certificate for its server name and
/// completes the handshake; `None` when the name has no certificate or the
/// client goes away.
pub(super) async fn handshake<S>(server: &Server, certs: &Certificates, stream: S) -> Option<TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let work = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await.ok()?;
        let name = start.client_hello().server_name()?.to_ascii_lowercase();
        let config = match super::resolve(server, &name).await {
            Ok(Some((view, _))) => {
                let c = view.certificates.iter().find(|c| c.name == name)?;
                match certs.config(&name, &c.certificate, &c.key) {
                    Ok(config) => config,
                    Err(e) => {
                        tracing::warn!(name, error = %e, "router: stored certificate does not load");
                        return None;
                    }
                }
            }
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(name, error = %e, "router: cannot choose a certificate");
                return None;
            }
        };
        start.into_stream(config).await.ok()
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await.ok().flatten()
}
