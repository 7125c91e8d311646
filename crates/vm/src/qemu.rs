//! The QEMU command line `selfheal vm` runs: the user's, plus what the host
//! side needs — a QMP socket, a pvpanic device with `-action panic=none`,
//! and the guest link's virtio-serial port. QEMU listens on both sockets
//! (`server=on`): its end is then bound to the path, which is how the
//! checkpoint engine is told to tolerate their replay.
//!
//! `panic=none`, not `pause`: pausing a VM makes QEMU close every virtio
//! ioeventfd (64 for one virtio-serial device) and open new ones on
//! resume, and a process whose descriptors were closed since a checkpoint
//! cannot be rolled back to it. With `none` QMP still reports
//! `GUEST_PANICKED` and the guest runs on in its panic path (printing, then
//! spinning or rebooting after the kernel's `panic=` seconds) until it is
//! rolled back.

use std::path::{Path, PathBuf};

/// The sockets of one run, in a private directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sockets {
    /// QMP.
    pub qmp: PathBuf,
    /// The guest link (virtio-serial port).
    pub link: PathBuf,
}

impl Sockets {
    /// The sockets under `dir`.
    pub fn in_dir(dir: &Path) -> Sockets {
        Sockets {
            qmp: dir.join("qmp.sock"),
            link: dir.join("link.sock"),
        }
    }

    /// Both, for the engine's replay-tolerant list.
    pub fn all(&self) -> Vec<PathBuf> {
        vec![self.qmp.clone(), self.link.clone()]
    }
}

/// The user's QEMU arguments conflict with what `selfheal vm` adds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// No program.
    #[error("no QEMU command given; write `selfheal vm [OPTIONS] -- qemu-system-x86_64 ARGS…`")]
    Empty,
    /// A panic action other than none would lose the guest, or close the
    /// descriptors a rollback needs.
    #[error("`{arg}` conflicts with selfheal vm: a panicked guest must keep running in QEMU to be rolled back (selfheal adds -action panic=none; pausing closes QEMU's ioeventfds); drop it")]
    PanicAction {
        /// The argument.
        arg: String,
    },
    /// `-daemonize` would leave us watching a process that exits at once.
    #[error("`-daemonize` conflicts with selfheal vm, which must be QEMU's parent; drop it")]
    Daemonize,
    /// An id or port name that selfheal uses is taken.
    #[error("`{arg}` uses the id or name `{id}` that selfheal vm adds itself; rename it")]
    Taken {
        /// The argument.
        arg: String,
        /// The colliding id.
        id: String,
    },
}

/// Ids selfheal's additions use.
const IDS: [&str; 3] = ["selfheal-qmp", "selfheal-link", "selfheal-vser"];

/// The full command: `user` followed by selfheal's additions. `port` is the
/// guest link's port name.
pub fn command(user: &[String], sockets: &Sockets, port: &str) -> Result<Vec<String>, ArgsError> {
    if user.is_empty() || user[0].is_empty() {
        return Err(ArgsError::Empty);
    }
    let mut has_pvpanic = false;
    for (i, a) in user.iter().enumerate() {
        let next = user.get(i + 1).map(String::as_str).unwrap_or("");
        let opt = a.trim_start_matches('-');
        if a.starts_with('-') && opt == "daemonize" {
            return Err(ArgsError::Daemonize);
        }
        if a.starts_with('-') && opt == "action" {
            for part in next.split(',') {
                if let Some(v) = part.strip_prefix("panic=") {
                    if v != "none" {
                        return Err(ArgsError::PanicAction {
                            arg: format!("{a} {next}"),
                        });
                    }
                }
            }
        }
        if a.starts_with('-') && opt == "device" && next.split(',').next() == Some("pvpanic") {
            has_pvpanic = true;
        }
        for id in IDS {
            if next.contains(&format!("id={id}")) || next.contains(&format!("name={port}")) {
                return Err(ArgsError::Taken {
                    arg: format!("{a} {next}"),
                    id: if next.contains(&format!("name={port}")) {
                        port.to_string()
                    } else {
                        id.to_string()
                    },
                });
            }
        }
    }
    // Right after the program, so the user's arguments may use the
    // virtio-serial bus (`bus=selfheal-vser.0`) for ports of their own.
    let mut out = vec![user[0].clone()];
    let sock =
        |id: &str, p: &Path| format!("socket,id={id},path={},server=on,wait=off", p.display());
    out.extend([
        "-chardev".into(),
        sock("selfheal-qmp", &sockets.qmp),
        "-mon".into(),
        "chardev=selfheal-qmp,mode=control".into(),
        "-action".into(),
        "panic=none".into(),
    ]);
    if !has_pvpanic {
        out.extend(["-device".into(), "pvpanic".into()]);
    }
    out.extend([
        "-device".into(),
        "virtio-serial-pci,id=selfheal-vser".into(),
        "-chardev".into(),
        sock("selfheal-link", &sockets.link),
        "-device".into(),
        format!("virtserialport,bus=selfheal-vser.0,chardev=selfheal-link,name={port}"),
    ]);
    out.extend(user[1..].iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn adds_qmp_pvpanic_and_the_link() {
        let socks = Sockets::in_dir(Path::new("/run/x"));
        let c = command(
            &s(&["qemu-system-x86_64", "-m", "512"]),
            &socks,
            "org.selfheal.0",
        )
        .unwrap();
        let line = c.join(" ");
        assert!(line.starts_with("qemu-system-x86_64 -chardev "));
        assert!(
            line.ends_with(" -m 512"),
            "the user's arguments last: {line}"
        );
        assert!(line.contains("-chardev socket,id=selfheal-qmp,path=/run/x/qmp.sock,server=on,wait=off -mon chardev=selfheal-qmp,mode=control"));
        assert!(line.contains("-action panic=none -device pvpanic "));
        assert!(line.contains(
            "virtserialport,bus=selfheal-vser.0,chardev=selfheal-link,name=org.selfheal.0"
        ));
        // The user's pvpanic is kept, not doubled.
        let c = command(&s(&["q", "-device", "pvpanic,ioport=0x505"]), &socks, "p").unwrap();
        assert_eq!(c.iter().filter(|a| a.starts_with("pvpanic")).count(), 1);
    }

    #[test]
    fn refuses_what_conflicts() {
        let socks = Sockets::in_dir(Path::new("/r"));
        let p = "org.selfheal.0";
        assert_eq!(command(&[], &socks, p), Err(ArgsError::Empty));
        assert!(matches!(
            command(
                &s(&["q", "-action", "reboot=shutdown,panic=shutdown"]),
                &socks,
                p
            ),
            Err(ArgsError::PanicAction { .. })
        ));
        assert!(command(&s(&["q", "-action", "panic=none"]), &socks, p).is_ok());
        assert!(command(&s(&["q", "-action", "panic=pause"]), &socks, p).is_err());
        assert_eq!(
            command(&s(&["q", "--daemonize"]), &socks, p),
            Err(ArgsError::Daemonize)
        );
        let e = command(
            &s(&["q", "-chardev", "socket,id=selfheal-qmp,path=/x"]),
            &socks,
            p,
        );
        assert!(matches!(e, Err(ArgsError::Taken { id, .. }) if id == "selfheal-qmp"));
        let e = command(
            &s(&["q", "-device", "virtserialport,name=org.selfheal.0"]),
            &socks,
            p,
        );
        assert!(matches!(e, Err(ArgsError::Taken { id, .. }) if id == p));
    }
}
