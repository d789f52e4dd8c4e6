//! Meridian's own certificate authority: created at first start in the data directory, it
//! signs the agent listeners' certificates and, until managed certificates exist, those of
//! HTTPS and TLS endpoints. Agents and visitors trust it through `ca.pem`.
//!
//! Only the CA's key is read back on later starts: the issuer is rebuilt from the key and the
//! fixed parameters below, which yields the same subject and key identifier, so certificates
//! signed later still chain to the `ca.pem` written at creation.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The CA certificate's file name in the data directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in the data directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Most leaf certificates kept in memory; past it the cache starts over (issuing is cheap).
const MAX_CACHED: usize = 10_000;

/// Creating, loading or using the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the CA files.
    #[error("CA file {path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Generating or parsing keys and certificates.
    #[error("certificate error: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the generated key.
    #[error("TLS key error: {0}")]
    Tls(#[from] rustls::Error),
}

/// The certificate authority.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    provider: Arc<CryptoProvider>,
    cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Meridian");
    dn.push(DnType::CommonName, "Meridian local CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// ring's suites with AES-128-GCM preferred. The SDKs' rustls asks for AES-256-GCM first;
/// the edge picks by its own order (`ignore_client_order` on its configs), because AES-128
/// runs 10 rounds to AES-256's 14 at the same GHASH cost, and the agent link carries every
/// byte of every endpoint. Both are 128-bit-secure AEADs for our purposes.
fn provider() -> CryptoProvider {
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS13_AES_128_GCM_SHA256,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    // Stable: the other suites keep ring's order behind them.
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}

impl Authority {
    /// Loads the CA from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let (key, ca_pem) = if key_path.exists() && cert_path.exists() {
            let key =
                KeyPair::from_pem(&fs::read_to_string(&key_path).map_err(io_err(&key_path))?)?;
            (
                key,
                fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?,
            )
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            // Key first: a crash between the two writes leaves no certificate without its key.
            write_private(&key_path, &key.serialize_pem()).map_err(io_err(&key_path))?;
            write_private(&cert_path, &cert.pem()).map_err(io_err(&cert_path))?;
            tracing::info!(path = %cert_path.display(), "created the Meridian CA");
            (key, cert.pem())
        };
        Ok(Self {
            issuer: Issuer::new(ca_params(), key),
            ca_pem,
            provider: Arc::new(provider()),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The crypto provider every TLS config of the edge uses: ring, AES-128-GCM first.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        self.provider.clone()
    }

    /// A certificate for these names (DNS names, wildcards or IP addresses), signed by the CA.
    pub fn issue(&self, names: &[String]) -> Result<Arc<CertifiedKey>, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = self.provider.key_provider.load_private_key(der)?;
        Ok(Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(cert.der().to_vec())],
            signing,
        )))
    }

    /// The certificate for one host name, issued on first use and then cached.
    pub fn for_host(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        if let Some(found) = lock(&self.cache).get(host) {
            return Ok(found.clone());
        }
        let issued = self.issue(&[host.to_owned()])?;
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(host.to_owned(), issued.clone());
        Ok(issued)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
