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

/// Writes `ca.crt`, `gate.crt` and `gate.key` (mode 0600) into `dir`. The
/// key goes into a new file renamed over the old one, so it is 0600 even
/// where a `gate.key` of another mode was, and a symlink in its place is
/// replaced, not followed.
///
/// # Errors
/// The directory cannot be created or written.
pub fn write(dir: &Path, pki: &LabPki) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.crt"), &pki.ca_cert)?;
    std::fs::write(dir.join("gate.crt"), &pki.gate_cert)?;
    crate::identity::users::replace_file(&dir.join("gate.key"), pki.gate_key.as_bytes())
}

#[cfg(test)]
mod tests {
    /// A new key never lands in an old file's mode or through a symlink
    /// (found by a review: `cert init` over a 0644 `gate.key` wrote the new
    /// key readable by every local user).
    #[test]
    fn the_key_is_written_0600_whatever_was_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::audit::testdir("pki-key");
        let key = dir.join("gate.key");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let elsewhere = dir.join("elsewhere");
        std::fs::write(&elsewhere, "not a key").unwrap();
        let pki = super::generate(&["gate.lab".into()]).unwrap();
        super::write(&dir, &pki).unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), pki.gate_key);
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &key).unwrap();
        super::write(&dir, &pki).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "not a key", "the link was followed");
        assert!(!std::fs::symlink_metadata(&key).unwrap().file_type().is_symlink());
    }

    #[test]
    fn lab_pki_makes_a_usable_server_config() {
        let pki = super::generate(&["gate.lab".into(), "100.64.0.1".into()]).unwrap();
        assert!(pki.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        dataplane::tls::server_config(pki.gate_cert.as_bytes(), pki.gate_key.as_bytes(), None, false).unwrap();
    }
}
