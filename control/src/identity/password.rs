//! Password hashes: argon2id in PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
//!
//! New hashes use OWASP's argon2id parameters (19 MiB, 2 passes, 1 lane) and
//! a 16-byte salt from the OS. Verification takes the parameters from the
//! stored string, so old hashes keep working after a parameter change, and
//! compares the outputs in constant time (inside `argon2`). Cost: one
//! verification is ~25 ms on one core when argon2 is optimized (~0.3 s if not);
//! it never runs on a dp core.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// OWASP's argon2id memory cost, KiB.
pub const M_COST: u32 = 19_456;
/// OWASP's argon2id passes.
pub const T_COST: u32 = 2;
/// OWASP's argon2id lanes.
pub const P_COST: u32 = 1;

/// Largest memory cost a stored hash may ask for (1 GiB): a typo in the
/// secrets file must not make each login allocate without bound.
pub const MAX_M_COST: u32 = 1 << 20;
/// Largest pass count a stored hash may ask for.
pub const MAX_T_COST: u32 = 32;
/// Largest lane count a stored hash may ask for.
pub const MAX_P_COST: u32 = 16;

/// A hash of a password nobody knows, with the production parameters: an
/// unknown user's login verifies against it, so it takes as long as a known
/// user's and the answer time does not tell which names exist.
pub(crate) const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$\
    jcRg9w1mvgG7BsZ5n7sV4A$9en5JbJK/WGnnIXFgcanW6wg0EaoNXUtei5YRWCzxHo";

/// Hashing failed (the OS had no randomness, or bad parameters).
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// The production parameters.
pub fn params() -> Params {
    // The constants are valid (m >= 8p, t >= 1, 1 <= p < 2^24), so this is
    // `Params::DEFAULT`'s values spelled out; fall back to it regardless.
    Params::new(M_COST, T_COST, P_COST, None).unwrap_or(Params::DEFAULT)
}

/// Hashes `password` with the production parameters and a fresh salt.
///
/// # Errors
/// The OS random source failed.
pub fn hash(password: &[u8]) -> Result<String, HashError> {
    hash_with(params(), password)
}

/// Hashes `password` with `params` (tests use cheap ones).
///
/// # Errors
/// The OS random source failed or `params` are invalid.
pub fn hash_with(params: Params, password: &[u8]) -> Result<String, HashError> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. A string that does not
/// parse, or is not argon2, never matches.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Checks a stored PHC string: argon2id, and parameters within bounds.
///
/// # Errors
/// What is wrong, for the secrets-file error message.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC password hash string ({e})"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!("password hash algorithm is {}, expected argon2id", parsed.algorithm.as_str()));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("password hash has no salt or no output".into());
    }
    let p = Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters ({e})"))?;
    if p.m_cost() > MAX_M_COST || p.t_cost() > MAX_T_COST || p.p_cost() > MAX_P_COST {
        return Err(format!(
            "argon2 parameters m={},t={},p={} exceed the limits m<={MAX_M_COST},t<={MAX_T_COST},p<={MAX_P_COST}",
            p.m_cost(),
            p.t_cost(),
            p.p_cost()
        ));
    }
    Ok(())
}

/// Whether a stored hash is weaker than the production parameters.
pub fn is_weak(phc: &str) -> bool {
    stored_params(phc).is_none_or(|p| p.m_cost() < M_COST || p.t_cost() < T_COST)
}

/// Whether a stored hash costs more than the production parameters: a
/// login for its user takes longer than one for an unknown name, which
/// tells that the name exists.
pub fn is_costlier(phc: &str) -> bool {
    stored_params(phc).is_some_and(|p| p.m_cost() > M_COST || p.t_cost() > T_COST || p.p_cost() > P_COST)
}

/// The argon2 parameters of a stored PHC string, if it has usable ones.
fn stored_params(phc: &str) -> Option<Params> {
    PasswordHash::new(phc).ok().and_then(|h| Params::try_from(&h).ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Cheap parameters so unoptimized tests stay fast.
    pub(crate) fn cheap(password: &[u8]) -> String {
        let p = Params::new(64, 1, 1, None).expect("valid test params");
        hash_with(p, password).expect("hash")
    }

    #[test]
    fn hash_verify_round_trip() {
        let phc = cheap(b"correct horse battery staple");
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify(&phc, b"correct horse battery staple"));
        assert!(!verify(&phc, b"correct horse battery stapl"));
        assert!(!verify(&phc, b""));
        assert_eq!(check_phc(&phc), Ok(()));
        assert!(is_weak(&phc));
        // Fresh salt each time.
        assert_ne!(cheap(b"x"), cheap(b"x"));
    }

    #[test]
    fn production_parameters_are_owasp() {
        let phc = hash(b"a long enough password").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(&phc, b"a long enough password"));
        assert!(!is_weak(&phc));
    }

    #[test]
    fn dummy_hash_is_valid_and_matches_nothing_plausible() {
        assert_eq!(check_phc(DUMMY_PHC), Ok(()));
        assert!(!is_weak(DUMMY_PHC));
        assert!(!verify(DUMMY_PHC, b""));
    }

    #[test]
    fn bad_phc_strings_are_refused() {
        assert!(!verify("not a hash", b"x"));
        assert!(check_phc("not a hash").is_err());
        let argon2i = "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert!(check_phc(argon2i).unwrap_err().contains("argon2id"));
        let huge = "$argon2id$v=19$m=4000000,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert!(check_phc(huge).unwrap_err().contains("exceed"));
    }
}
