//! Certificates for mutual-TLS tests, made fresh by each test.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// A CA and one certificate for `localhost` good for both ends of mutual TLS (as the core's
/// `sslCertSecret` must be for Prometheus and the operator to read demand): (ca, cert, key), PEM.
pub fn mutual_tls() -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "test ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(params, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap().pem();
    (ca, cert, key.serialize_pem())
}

/// [`mutual_tls`], also written to `dir` as `ca.crt`, `tls.crt` and `tls.key`.
pub fn write_mutual_tls(dir: &std::path::Path) -> (String, String, String) {
    let (ca, cert, key) = mutual_tls();
    for (name, pem) in [("ca.crt", &ca), ("tls.crt", &cert), ("tls.key", &key)] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    (ca, cert, key)
}
