//! The connection to the collector: a Unix stream socket (`LEAKSCOPE_SOCKET`, a path or
//! `@name` for an abstract socket) moved to a high, close-on-exec descriptor. The hooks on
//! `close` and `close_range` keep the program from closing it; before each write the
//! descriptor is checked to still be this socket, since the program may have replaced it.

use std::ffi::c_int;
use std::io;
use std::mem;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

/// The socket is moved to the lowest free descriptor at or above this number.
pub const MIN_FD: c_int = 500;
/// How long connecting may take (a collector with a full backlog must not hang the program).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

static OUR_FD: AtomicI32 = AtomicI32::new(-1);
static OUR_DEV: AtomicU64 = AtomicU64::new(0);
static OUR_INO: AtomicU64 = AtomicU64::new(0);

/// Why the collector cannot be (or can no longer be) reached.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the socket address is {len} bytes long, at most {max} fit")]
    AddressTooLong { len: usize, max: usize },
    #[error("cannot create a socket: {0}")]
    Socket(io::Error),
    #[error("{0}")]
    Connect(io::Error),
    #[error("the collector closed the connection: {0}")]
    Closed(io::Error),
    #[error("the program closed or replaced the shim's socket (fd {0})")]
    Replaced(c_int),
    #[error("cannot write to the collector: {0}")]
    Write(io::Error),
}

/// Whether `fd` is the shim's socket right now (the `close` hooks leave it open). When the
/// number matches but the program has put another file there (`dup2`), the number is the
/// program's again and the shim lets go of it.
pub fn is_our_fd(fd: c_int) -> bool {
    if fd < 0 || fd != OUR_FD.load(Ordering::Acquire) {
        return false;
    }
    if identity(fd) == Some(our_identity()) {
        return true;
    }
    let _ = OUR_FD.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed);
    false
}

/// The shim's socket descriptor, or -1.
pub fn our_fd() -> c_int {
    OUR_FD.load(Ordering::Acquire)
}

/// An open connection. Dropping it closes the socket if it is still the shim's.
#[derive(Debug)]
pub struct Conn {
    fd: c_int,
    id: (u64, u64),
}

/// Connects to `target`.
pub fn connect(target: &str) -> Result<Conn, TransportError> {
    let (addr, len) = sockaddr(target)?;
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(TransportError::Socket(io::Error::last_os_error()));
    }
    set_send_timeout(fd, CONNECT_TIMEOUT);
    loop {
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        let r = unsafe { libc::connect(fd, (&raw const addr).cast(), len) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            close_raw(fd);
            return Err(TransportError::Connect(e));
        }
    }
    set_send_timeout(fd, Duration::ZERO);
    // SAFETY: F_DUPFD_CLOEXEC duplicates `fd` to the lowest free number >= MIN_FD.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, MIN_FD) };
    let fd = if high >= 0 {
        close_raw(fd);
        high
    } else {
        fd // RLIMIT_NOFILE below MIN_FD: keep the low number, still checked before writes.
    };
    let id = identity(fd).ok_or_else(|| TransportError::Socket(io::Error::last_os_error()))?;
    OUR_DEV.store(id.0, Ordering::Relaxed);
    OUR_INO.store(id.1, Ordering::Relaxed);
    OUR_FD.store(fd, Ordering::Release);
    Ok(Conn { fd, id })
}

impl Conn {
    /// The descriptor number.
    #[cfg(test)]
    pub fn fd(&self) -> c_int {
        self.fd
    }

    /// Writes all of `buf`, first checking the descriptor is still this socket.
    pub fn write_all(&self, mut buf: &[u8]) -> Result<(), TransportError> {
        if identity(self.fd) != Some(self.id) {
            return Err(TransportError::Replaced(self.fd));
        }
        while !buf.is_empty() {
            // SAFETY: `buf` is valid for `buf.len()` bytes; MSG_NOSIGNAL turns a closed peer
            // into EPIPE instead of a SIGPIPE for the program.
            let n =
                unsafe { libc::send(self.fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                buf = &buf[n as usize..];
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EPIPE | libc::ECONNRESET) => return Err(TransportError::Closed(e)),
                Some(libc::EBADF | libc::ENOTSOCK) => {
                    return Err(TransportError::Replaced(self.fd))
                }
                _ => return Err(TransportError::Write(e)),
            }
        }
        Ok(())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = OUR_FD.compare_exchange(self.fd, -1, Ordering::AcqRel, Ordering::Relaxed);
        if identity(self.fd) == Some(self.id) {
            close_raw(self.fd);
        }
    }
}

/// In a fork child: closes the copy of the parent's connection (the parent's stream must
/// end when the parent ends), unless the program has reused the descriptor.
pub fn abandon_inherited() {
    let fd = OUR_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 && identity(fd) == Some(our_identity()) {
        close_raw(fd);
    }
}

/// (device, inode) of the shim's socket, as stored by [`connect`].
fn our_identity() -> (u64, u64) {
    (
        OUR_DEV.load(Ordering::Relaxed),
        OUR_INO.load(Ordering::Relaxed),
    )
}

/// Closes `fd` with the system call itself: `libc::close` would reach the shim's own hook.
fn close_raw(fd: c_int) {
    // SAFETY: closing a descriptor the shim owns.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// (device, inode) of the socket behind `fd`, if it is a socket.
fn identity(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: `st` is a valid out-pointer; fstat on any number is harmless.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

fn set_send_timeout(fd: c_int, d: Duration) {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a valid timeval of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
}

/// Builds the socket address: a path, or `@name` for the abstract namespace.
fn sockaddr(target: &str) -> Result<(libc::sockaddr_un, libc::socklen_t), TransportError> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (name, skip, nul) = match target.strip_prefix('@') {
        Some(abs) => (abs.as_bytes(), 1, 0),
        None => (target.as_bytes(), 0, 1),
    };
    let max = addr.sun_path.len() - skip - nul;
    if name.len() > max || name.contains(&0) {
        return Err(TransportError::AddressTooLong {
            len: name.len(),
            max,
        });
    }
    for (dst, &b) in addr.sun_path[skip..].iter_mut().zip(name) {
        *dst = b as libc::c_char;
    }
    let base = mem::offset_of!(libc::sockaddr_un, sun_path);
    Ok((addr, (base + skip + name.len() + nul) as libc::socklen_t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    fn temp_socket(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("lks-transport-{tag}-{}", std::process::id()))
    }

    #[test]
    fn connects_to_a_path_on_a_high_cloexec_fd() {
        let path = temp_socket("path");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let c = connect(path.to_str().unwrap()).unwrap();
        assert!(c.fd() >= MIN_FD, "fd {}", c.fd());
        // SAFETY: querying descriptor flags.
        let flags = unsafe { libc::fcntl(c.fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        let (mut peer, _) = l.accept().unwrap();
        c.write_all(b"hello").unwrap();
        drop(c);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn connects_to_an_abstract_name() {
        let name = format!("lks-transport-abs-{}", std::process::id());
        let l = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let c = connect(&format!("@{name}")).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        c.write_all(b"abc").unwrap();
        let mut buf = [0u8; 3];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"abc");
    }

    #[test]
    fn errors_name_the_problem() {
        let missing = temp_socket("missing");
        let e = connect(missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, TransportError::Connect(_)), "{e}");
        assert!(e.to_string().contains("No such file"), "{e}");
        let long = "x".repeat(200);
        let e = connect(&long).unwrap_err();
        assert!(
            matches!(e, TransportError::AddressTooLong { len: 200, .. }),
            "{e}"
        );
    }

    #[test]
    fn detects_a_closed_peer_and_a_replaced_fd() {
        let path = temp_socket("peer");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let c = connect(path.to_str().unwrap()).unwrap();
        drop(l.accept().unwrap());
        let e = c.write_all(b"x").unwrap_err();
        assert!(matches!(e, TransportError::Closed(_)), "{e}");

        let c2 = connect(path.to_str().unwrap()).unwrap();
        let _peer = l.accept().unwrap();
        let other = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: replaces the descriptor as a program might.
        assert!(unsafe { libc::dup2(other.as_raw_fd(), c2.fd()) } >= 0);
        let e = c2.write_all(b"x").unwrap_err();
        assert!(matches!(e, TransportError::Replaced(_)), "{e}");
        let fd = c2.fd();
        drop(c2);
        // The program's /dev/null stays open: the shim closes only its own socket.
        // SAFETY: querying descriptor flags.
        assert!(unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
        close_raw(fd);
        let _ = std::fs::remove_file(&path);
    }
}
