//! The TOTP step of each user's last login, on disk, so that "a code is
//! good once" survives a restart of the gate: without it a code used just
//! before a restart could be used again for the rest of its window.
//!
//! The file is text, a user and a step per line (names are
//! [`super::users::check_name`] words, so no quoting is needed), replaced
//! atomically after each successful login (logins are human-rate; the
//! write is one small file, fsynced). Reading it is strict: a line that is
//! not `NAME STEP` stops the gate from starting, with its line number.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use super::users::{check_name, replace_file};

const HEADER: &str = "# accessgate: the TOTP step of each user's last login (a code is good once, across restarts)\n";

/// Where the steps are kept.
#[derive(Debug, Clone)]
pub struct StepFile {
    path: PathBuf,
}

impl StepFile {
    /// Opens `path` and reads the steps in it (none if it does not exist).
    ///
    /// # Errors
    /// The file cannot be read, or a line is not `NAME STEP`.
    pub fn load(path: &Path) -> Result<(Self, HashMap<String, u64>), String> {
        let steps = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text).map_err(|e| {
                format!(
                    "TOTP step file {}: {e} (remove it to start without it: a code used in the last minute could then be used once more)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(format!("TOTP step file {}: {e}", path.display())),
        };
        Ok((Self { path: path.to_path_buf() }, steps))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `steps` (atomically, synced).
    ///
    /// # Errors
    /// Any I/O failure; the old file is then untouched.
    pub fn save(&self, steps: &HashMap<String, u64>) -> io::Result<()> {
        replace_file(&self.path, render(steps).as_bytes())
    }
}

/// The file's text for `steps` (users in name order).
pub fn render(steps: &HashMap<String, u64>) -> String {
    let mut names: Vec<&String> = steps.keys().collect();
    names.sort();
    let mut text = String::from(HEADER);
    for name in names {
        let _ = writeln!(text, "{name} {}", steps[name]);
    }
    text
}

/// Reads the file's text: blank lines and `#` comments are skipped, every
/// other line must be `NAME STEP`.
///
/// # Errors
/// The first bad line, by number.
pub fn parse(text: &str) -> Result<HashMap<String, u64>, String> {
    let mut steps = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let mut words = line.split_whitespace();
        let (Some(name), Some(step), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("line {n}: expected `NAME STEP`"));
        };
        check_name(name).map_err(|e| format!("line {n}: {e}"))?;
        let step: u64 = step.parse().map_err(|_| format!("line {n}: step {step:?} is not a whole number"))?;
        if steps.insert(name.to_string(), step).is_some() {
            return Err(format!("line {n}: user {name:?} twice"));
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stable-toolchain twin of `fuzz/fuzz_targets/step_file.rs`.
    #[test]
    fn step_file_parser_never_panics_and_round_trips() {
        let mut rng = dataplane::xorshift::XorShift::new(0x5eed_57e9);
        let alphabet = b"ab1_-.# \n\t0123456789xZ\xc3\xa9";
        for _ in 0..20_000 {
            let len = rng.below(48);
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            match parse(text) {
                Ok(steps) => assert_eq!(parse(&render(&steps)), Ok(steps), "{text:?}"),
                Err(e) => assert!(e.starts_with("line "), "{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn steps_round_trip_and_bad_lines_are_named() {
        let dir = crate::identity::users::tests::tempdir("steps");
        let path = dir.join("secrets.toml.totp-steps");
        let (file, steps) = StepFile::load(&path).unwrap();
        assert!(steps.is_empty(), "a missing file is an empty one");
        let steps = HashMap::from([("alice".to_string(), 59_866_533), ("bob".to_string(), 7)]);
        file.save(&steps).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with('#') && text.ends_with("alice 59866533\nbob 7\n"), "{text}");
        assert_eq!(StepFile::load(&path).unwrap().1, steps);
        for (bad, why) in [
            ("alice\n", "line 1: expected `NAME STEP`"),
            ("# c\nalice 1 2\n", "line 2: expected `NAME STEP`"),
            ("alice x\n", "line 1: step \"x\" is not a whole number"),
            ("alice -1\n", "line 1: step \"-1\" is not a whole number"),
            ("Alice 1\n", "line 1: "),
            ("alice 1\nalice 2\n", "line 2: user \"alice\" twice"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = StepFile::load(&path).unwrap_err();
            assert!(e.contains(why) && e.contains("remove it"), "{bad:?}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
