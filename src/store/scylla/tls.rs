//! TLS to the cluster's nodes: a rustls client config that trusts only the CA the operator
//! gave (`KASSA_SCYLLA_TLS_CA`), never the system roots, and never skips verification.
//! The driver names each node by the IP address it dials; with `KASSA_SCYLLA_TLS_SERVER_NAME`
//! every node's certificate is checked against that one name instead.

use crate::config::ScyllaTls;
use anyhow::Context as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// The client config of every connection to the cluster; fails on a CA file that cannot be
/// read or holds no certificate, naming the file.
pub fn client_config(tls: &ScyllaTls) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let ca = tls.ca_file.display();
    let pem = std::fs::read(&tls.ca_file)
        .with_context(|| format!("KASSA_SCYLLA_TLS_CA: cannot read {ca}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("KASSA_SCYLLA_TLS_CA: {ca} is not PEM"))?;
        roots
            .add(cert)
            .with_context(|| format!("KASSA_SCYLLA_TLS_CA: a certificate in {ca} is invalid"))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "KASSA_SCYLLA_TLS_CA: {ca} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
    );
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = match &tls.server_name {
        None => builder.with_root_certificates(roots).with_no_client_auth(),
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .with_context(|| format!("KASSA_SCYLLA_TLS_SERVER_NAME: `{name}`"))?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("KASSA_SCYLLA_TLS_CA: the certificate verifier")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(OneName { webpki, name }))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// The standard WebPKI verification (chain to the CA, validity, key usage, signatures), with
/// the certificate's subject names checked against one configured name rather than the
/// node's address.
#[derive(Debug)]
struct OneName {
    webpki: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for OneName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed P-256 CA (`openssl req -x509 -newkey ec ...`), valid until 2126.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBhzCCAS2gAwIBAgIUXmYRSOpIsGXy+Uk6cj55Coe/I9cwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNS2Fzc2EgdGVzdCBDQTAgFw0yNjEyMDYxODI1NDVaGA8yMTI2
MTExMjE4MjU0NVowGDEWMBQGA1UEAwwNS2Fzc2EgdGVzdCBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABOnY13IOctBiaIKkrLOk95fdSmL+nXz72op/vtuKPAr3
CCMm+8198AfVzc1QsWfrs022DwXVgizXAtO4Ld7Ql4WjUzBRMB0GA1UdDgQWBBQq
cQemqXfjoV2bWxAAUPrT6XE87DAfBgNVHSMEGDAWgBQqcQemqXfjoV2bWxAAUPrT
6XE87DAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIGDw9w3n8ZZi
G4aYCMG5DwzN6K2Qv3XMHFVAv65SoZVZAiEAh6E5nP5WSgpW+7vBRISAnTFhhl0W
MUIsRsLIJrFbTds=
-----END CERTIFICATE-----
";

    fn tls_with(ca: &str, server_name: Option<&str>) -> (tempfile::TempDir, ScyllaTls) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).expect("write ca");
        let tls = ScyllaTls {
            ca_file,
            server_name: server_name.map(str::to_string),
        };
        (dir, tls)
    }

    #[test]
    fn a_pem_ca_gives_a_client_config_checking_the_address_or_one_name() {
        for name in [None, Some("scylla-client.scylla.svc")] {
            let (_dir, tls) = tls_with(CA, name);
            client_config(&tls).expect("client config");
        }
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_named_in_the_error() {
        let (dir, mut tls) = tls_with("not a certificate\n", None);
        let err = client_config(&tls).expect_err("no certificate").to_string();
        assert!(err.contains("holds no certificate"), "{err}");
        assert!(err.contains("ca.pem"), "{err}");
        tls.ca_file = dir.path().join("missing.pem");
        let err = format!("{:#}", client_config(&tls).expect_err("missing"));
        assert!(
            err.contains("cannot read") && err.contains("missing.pem"),
            "{err}"
        );
    }
}
