//! The collector's listening socket: a Unix socket in the abstract namespace (no file to
//! clean up), named `leakscope.<pid>.<random>`; the shim finds it through `LEAKSCOPE_SOCKET`
//! as `@leakscope.<pid>.<random>`. Non-blocking, so the run loop can poll it.

use crate::error::RunError;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

/// See the module documentation.
#[derive(Debug)]
pub struct Listener {
    inner: UnixListener,
    name: String,
}

impl Listener {
    /// Binds a fresh abstract name.
    pub fn bind() -> Result<Self, RunError> {
        let random = RandomState::new();
        let mut last = io::Error::from(ErrorKind::AddrInUse);
        for attempt in 0u32..16 {
            let name = format!(
                "leakscope.{}.{:016x}",
                std::process::id(),
                random.hash_one(attempt)
            );
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(RunError::Listen)?;
            match UnixListener::bind_addr(&addr) {
                Ok(inner) => {
                    inner.set_nonblocking(true).map_err(RunError::Listen)?;
                    return Ok(Listener { inner, name });
                }
                Err(e) if e.kind() == ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(RunError::Listen(e)),
            }
        }
        Err(RunError::Listen(last))
    }

    /// The value for `LEAKSCOPE_SOCKET`.
    pub fn env_value(&self) -> String {
        format!("@{}", self.name)
    }

    /// Waits up to `timeout` for a connection to be pending; `true` if one is.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut fds = libc::pollfd {
            fd: self.inner.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, its count, a timeout; poll only writes `revents`.
        let n = unsafe { libc::poll(&mut fds, 1, ms) };
        n > 0 && fds.revents & libc::POLLIN != 0
    }

    /// Accepts one pending connection (blocking mode), `None` when none is pending.
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        loop {
            match self.inner.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)?;
                    return Ok(Some(s));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn connect_by_the_env_value() {
        let l = Listener::bind().unwrap();
        let v = l.env_value();
        assert!(
            v.starts_with(&format!("@leakscope.{}.", std::process::id())),
            "{v}"
        );
        assert!(l.accept().unwrap().is_none());
        assert!(!l.wait(Duration::from_millis(1)));
        let addr = SocketAddr::from_abstract_name(&v.as_bytes()[1..]).unwrap();
        let mut c = UnixStream::connect_addr(&addr).unwrap();
        assert!(l.wait(Duration::from_secs(5)));
        let mut s = l.accept().unwrap().expect("pending");
        c.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        // Two listeners never share a name.
        assert_ne!(Listener::bind().unwrap().env_value(), v);
    }
}
