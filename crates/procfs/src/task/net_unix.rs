//! /proc/PID/net/unix: the unix sockets of a process's network namespace.

/// Parses `net/unix`: the inode of every bound unix socket and its path
/// (abstract names start with `@`). A connection accepted on a listening
/// socket shows the listener's path. Unbound sockets are left out.
pub fn parse_net_unix(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path (may hold spaces)
            let mut rest = line.trim_start();
            let mut field = || {
                let (f, r) = rest.split_once(' ')?;
                rest = r.trim_start();
                Some(f)
            };
            for _ in 0..6 {
                field()?;
            }
            let (inode, path) = rest.split_once(' ')?;
            let inode = inode.parse().ok()?;
            (!path.is_empty()).then(|| (inode, path.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_net_unix_with_paths_and_spaces() {
        // Captured on kernel 6.18: a listener, a connection accepted on it
        // (same path), an unbound socket and an abstract one.
        let text = "Num       RefCount Protocol Flags    Type St Inode Path
0000000004be18eb: 00000002 00000000 00010000 0001 01 124174 /tmp/x sock.s
00000000e860e751: 00000003 00000000 00000000 0001 03 124176 /tmp/x sock.s
000000005c7c0485: 00000003 00000000 00000000 0001 03 123177
000000002fb5f2dd: 00000002 00000000 00000000 0002 01 124178 @abstract-name
";
        assert_eq!(
            parse_net_unix(text),
            vec![
                (124174, "/tmp/x sock.s".to_string()),
                (124176, "/tmp/x sock.s".to_string()),
                (124178, "@abstract-name".to_string()),
            ]
        );
        assert!(parse_net_unix("garbage\nmore garbage\n").is_empty());
    }
}
