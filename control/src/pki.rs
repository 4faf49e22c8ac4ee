//! A small certificate authority for labs and tests: an ECDSA P-256 CA and a
//! gate certificate it signs. Production gates use certificates from the
//! plant's own PKI; `accessgate cert init` is for labs and first trials.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// PEM text of a lab PKI.
pub struct LabPki {
    pub ca_cert: String,
    pub gate_cert: String,
    pub gate_key: String,
}

/// Generates a CA and a gate certificate for `names` (DNS names or IPs).
///
/// # Errors
/// rcgen refused a name or failed to sign.
pub fn generate(names: &[String]) -> Result<LabPki, String> {
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.distinguished_name.push(DnType::CommonName, "Access Gate lab CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);

    let gate_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(e)?;
    let mut gate = CertificateParams::new(names.to_vec()).map_err(e)?;
    gate.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_else(|| "gate".into()));
    gate.is_ca = IsCa::ExplicitNoCa;
    let gate_cert = gate.signed_by(&gate_key, &issuer).map_err(e)?;
    Ok(LabPki { ca_cert: ca_cert.pem(), gate_cert: gate_cert.pem(), gate_key: gate_key.serialize_pem() })
}

/// Writes `ca.crt`, `gate.crt` and `gate.key` (mode 0600) into `dir`.
///
/// # Errors
/// The directory cannot be created or written.
pub fn write(dir: &Path, pki: &LabPki) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.crt"), &pki.ca_cert)?;
    std::fs::write(dir.join("gate.crt"), &pki.gate_cert)?;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(dir.join("gate.key"))?;
    std::io::Write::write_all(&mut f, pki.gate_key.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn lab_pki_makes_a_usable_server_config() {
        let pki = super::generate(&["gate.lab".into(), "100.64.0.1".into()]).unwrap();
        assert!(pki.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        dataplane::tls::server_config(pki.gate_cert.as_bytes(), pki.gate_key.as_bytes(), None, false).unwrap();
    }
}
