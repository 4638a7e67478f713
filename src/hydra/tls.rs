//! The HTTP clients: one for plain http with no CA certificates loaded, and one for https whose
//! roots come from one bundle file rather than a directory of certificates.

use std::path::PathBuf;
use std::time::Duration;

/// The HTTP client could not be built: in practice, the CA certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot set up HTTPS: the system's CA certificates could not be loaded ({0}); install them \
     (e.g. the ca-certificates package) or point SSL_CERT_FILE at a bundle"
)]
pub struct ClientError(String);

/// Redirects are followed by hand (credentials go to the job's origin only); every request and
/// its connection are bounded.
fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .timeout(timeout)
        .user_agent(concat!("hail/", env!("CARGO_PKG_VERSION")))
}

/// The innermost cause of an error (reqwest's own message is generic).
pub(super) fn cause(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// Where distributions keep their CA bundle (Debian and NixOS, Fedora, openSUSE, Alpine and
/// others): one file to read instead of a directory of certificates.
const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A client for plain http only.
pub(super) fn plain_client(timeout: Duration) -> Result<reqwest::Client, ClientError> {
    client_builder(timeout)
        .tls_certs_only([])
        .build()
        .map_err(|e| ClientError(cause(&e)))
}

/// A client for https: roots from `SSL_CERT_FILE`, else (unless `SSL_CERT_DIR` asks for a
/// directory) from the distribution's bundle file, else as the platform finds them.
pub(super) fn https_client(timeout: Duration) -> Result<reqwest::Client, ClientError> {
    let bundle = match std::env::var_os("SSL_CERT_FILE") {
        Some(file) => Some(PathBuf::from(file)),
        None if std::env::var_os("SSL_CERT_DIR").is_some() => None,
        None => CA_BUNDLES.iter().map(PathBuf::from).find(|p| p.is_file()),
    };
    let builder = client_builder(timeout);
    let builder = match bundle {
        Some(file) => {
            let pem = std::fs::read(&file)
                .map_err(|e| ClientError(format!("{}: {e}", file.display())))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError(format!("{}: {}", file.display(), cause(&e))))?;
            if roots.is_empty() {
                return Err(ClientError(format!(
                    "{} holds no certificates",
                    file.display()
                )));
            }
            builder.tls_certs_only(roots)
        }
        None => builder,
    };
    builder.build().map_err(|e| ClientError(cause(&e)))
}
