//! Receiving datagrams on a Unix socket together with the sender's
//! credentials (`SO_PASSCRED` / `SCM_CREDENTIALS`), so a notify socket can
//! believe only the process it supervises.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Result, SysError};

/// Who sent a datagram, as the kernel vouches for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixCredentials {
    /// Sender's process id (in our pid namespace; 0 if it has none there).
    pub pid: i32,
    /// Sender's user id.
    pub uid: u32,
    /// Sender's group id.
    pub gid: u32,
}

/// One datagram received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes stored in the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer and was cut.
    pub truncated: bool,
    /// The sender, when `SO_PASSCRED` is on.
    pub credentials: Option<UnixCredentials>,
}

/// Asks the kernel to attach the sender's credentials to every datagram
/// received on `fd` (`setsockopt(SO_PASSCRED, 1)`).
pub fn enable_passcred(fd: BorrowedFd<'_>) -> Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int whose size is passed; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!(
            "setsockopt(fd {}, SO_PASSCRED)",
            fd.as_raw_fd()
        )))
    }
}

/// Room for the credentials and a few descriptors, 8-byte aligned.
#[repr(C, align(8))]
struct ControlBuf([u8; 256]);

/// Receives one datagram without blocking (`MSG_DONTWAIT`). `Ok(None)` when
/// none is queued. Descriptors a sender passes along (`SCM_RIGHTS`) are
/// closed at once: they are never installed past this call.
pub fn recv_with_credentials(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Option<Datagram>> {
    let mut control = ControlBuf([0; 256]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: `msg` points at `iov` (into `buf`) and `control`, all live for
    // the call with the lengths given.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        let err = SysError::last(format!("recvmsg(fd {})", fd.as_raw_fd()));
        if err.errno.0 == libc::EAGAIN || err.errno.0 == libc::EWOULDBLOCK {
            return Ok(None);
        }
        return Err(err);
    }
    let mut credentials = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // bounded by msg_controllen, which recvmsg set to the bytes written.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points at a header inside `control`.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        // SAFETY: CMSG_LEN(0) is pure arithmetic.
        let header = unsafe { libc::CMSG_LEN(0) } as usize;
        // cmsg_len is size_t with glibc but socklen_t with musl.
        #[allow(clippy::unnecessary_cast)]
        let payload = (len as usize).saturating_sub(header);
        // SAFETY: CMSG_DATA points just past the header of a valid cmsg.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        if level == libc::SOL_SOCKET
            && kind == libc::SCM_CREDENTIALS
            && payload >= std::mem::size_of::<libc::ucred>()
        {
            // SAFETY: the payload holds a full ucred (length checked); it may
            // be unaligned, hence read_unaligned.
            let uc: libc::ucred = unsafe { std::ptr::read_unaligned(data.cast()) };
            credentials = Some(UnixCredentials {
                pid: uc.pid,
                uid: uc.uid,
                gid: uc.gid,
            });
        } else if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            let count = payload / std::mem::size_of::<libc::c_int>();
            for i in 0..count {
                // SAFETY: `i` is within the payload's int count.
                let raw: libc::c_int =
                    unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i)) };
                // SAFETY: the kernel just installed this descriptor for us
                // and nothing else knows it; dropping closes it.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: CMSG_NXTHDR stays within msg_controllen and returns null
        // after the last header.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(Some(Datagram {
        len: (n as usize).min(buf.len()),
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        credentials,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn credentials_name_the_sender() {
        let (rx, tx) = UnixDatagram::pair().unwrap();
        enable_passcred(rx.as_fd()).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(recv_with_credentials(rx.as_fd(), &mut buf).unwrap(), None);
        tx.send(b"READY=1\nSTATUS=long").unwrap();
        let d = recv_with_credentials(rx.as_fd(), &mut buf)
            .unwrap()
            .unwrap();
        assert_eq!((d.len, d.truncated), (8, true));
        assert_eq!(&buf, b"READY=1\n");
        let c = d.credentials.unwrap();
        assert_eq!(c.pid, std::process::id() as i32);
        assert_eq!(c.uid, crate::process::geteuid());
    }
}
