//! The optional bearer token (`--auth-token-file`): read once at start, and every request's
//! `Authorization` header checked against it in constant time.
use std::path::Path;

/// The token a request must present.
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Invalid,
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Missing => {
                "this server requires a bearer token: send `Authorization: Bearer <token>`"
            }
            Refused::Invalid => "invalid bearer token",
        }
    }
}

impl Token {
    /// The file's content without surrounding whitespace (a trailing newline is usual).
    pub fn read(path: &Path) -> Result<Token, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("--auth-token-file {}: {e}", path.display()))?;
        let token = text.trim_ascii();
        if token.is_empty() {
            return Err(format!("--auth-token-file {} is empty", path.display()));
        }
        if token.iter().any(|b| b.is_ascii_control() || *b == b' ') {
            return Err(format!(
                "--auth-token-file {}: the token cannot hold spaces or control characters \
                 (an HTTP header carries it)",
                path.display()
            ));
        }
        Ok(Token(token.to_vec()))
    }

    /// Checks an `Authorization` header's value.
    pub fn check(&self, header: Option<&str>) -> Result<(), Refused> {
        let header = header.ok_or(Refused::Missing)?;
        let (scheme, given) = header.trim().split_once(' ').ok_or(Refused::Invalid)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refused::Invalid);
        }
        if constant_time_eq(given.trim().as_bytes(), &self.0) {
            Ok(())
        } else {
            Err(Refused::Invalid)
        }
    }
}

/// Equality whose time does not depend on where the inputs differ (only on their lengths):
/// a remote client cannot find the token byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Token {
        let dir = std::env::temp_dir().join(format!("alloctrace-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("t{}", s.len()));
        std::fs::write(&path, s).unwrap();
        let t = Token::read(&path);
        std::fs::remove_file(&path).unwrap();
        t.unwrap()
    }

    #[test]
    fn bearer_token_checked() {
        let t = token("s3cret\n");
        assert_eq!(t.check(Some("Bearer s3cret")), Ok(()));
        assert_eq!(t.check(Some("bearer s3cret")), Ok(()));
        assert_eq!(t.check(None), Err(Refused::Missing));
        assert_eq!(t.check(Some("Bearer s3cre")), Err(Refused::Invalid));
        assert_eq!(t.check(Some("Bearer s3cretx")), Err(Refused::Invalid));
        assert_eq!(t.check(Some("Basic s3cret")), Err(Refused::Invalid));
        assert_eq!(t.check(Some("s3cret")), Err(Refused::Invalid));
    }

    #[test]
    fn empty_token_file_refused() {
        let dir = std::env::temp_dir().join(format!("alloctrace-token-e{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty");
        std::fs::write(&path, " \n").unwrap();
        let e = Token::read(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains("is empty"), "{e}");
    }
}
