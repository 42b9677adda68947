//! The daemon's own options checked before anything is traced: where it listens (loopback
//! unless remote access is asked for explicitly) and the bearer token it requires.
use std::net::SocketAddr;
use std::path::PathBuf;

use super::auth::Token;

/// `alloctrace serve`'s options besides the tracing ones, as typed.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub allow_remote: bool,
    pub auth_token_file: Option<PathBuf>,
}

/// The options checked: where to listen, the token if any, and the warning to print.
pub struct Checked {
    pub listen: SocketAddr,
    pub token: Option<Token>,
    /// Said on stderr when serving starts: the address is reachable from other machines.
    pub warning: Option<String>,
}

impl Options {
    /// Refuses a non-loopback address without `--allow-remote`, and an unreadable or empty
    /// token file, each with a one-line reason naming the option.
    pub fn check(&self) -> Result<Checked, String> {
        let remote = !self.listen.ip().is_loopback();
        if remote && !self.allow_remote {
            return Err(format!(
                "--listen {} is not a loopback address: whoever reaches it reads the names of \
                 every traced process's functions; add --allow-remote to serve it anyway \
                 (with --auth-token-file)",
                self.listen
            ));
        }
        let token = match &self.auth_token_file {
            Some(path) => Some(Token::read(path)?),
            None => None,
        };
        let warning = remote.then(|| {
            format!(
                "alloctrace: warning: serving on {}, reachable from other machines{}: the \
                 profiles name every traced process's functions",
                self.listen,
                if token.is_some() {
                    " (bearer token required)"
                } else {
                    " WITHOUT a token (--auth-token-file)"
                }
            )
        });
        Ok(Checked {
            listen: self.listen,
            token,
            warning,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(listen: &str, allow_remote: bool) -> Options {
        Options {
            listen: listen.parse().unwrap(),
            allow_remote,
            auth_token_file: None,
        }
    }

    #[test]
    fn loopback_is_served_without_a_warning() {
        for a in ["127.0.0.1:6060", "[::1]:0"] {
            let c = opts(a, false).check().unwrap();
            assert!(c.warning.is_none(), "{a}");
        }
    }

    #[test]
    fn another_address_needs_the_flag_and_gets_a_warning() {
        let e = opts("0.0.0.0:6060", false).check().err().unwrap();
        assert!(
            e.contains("--allow-remote") && e.contains("0.0.0.0:6060"),
            "{e}"
        );
        let c = opts("0.0.0.0:6060", true).check().unwrap();
        assert!(c.warning.unwrap().contains("WITHOUT a token"));
    }
}
