//! Which filesystems a write can be undone on: local ones whose files are
//! plain bytes. On procfs, sysfs, cgroupfs and the like a write acts
//! beyond the file; on network and FUSE filesystems others may see or
//! change the file meanwhile; hugetlbfs files cannot be written back with
//! pwrite.

use crate::events::FileRefusal;

/// Local filesystems whose regular files are plain, restorable bytes.
const RESTORABLE: &[(i64, &str)] = &[
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58f6, "ramfs"),
    (0x794c_7630, "overlayfs"),
    (0xF2F5_2010, "f2fs"),
    (0xca45_1a4e, "bcachefs"),
    (0x2fc1_2fc1, "zfs"),
    (0x4d44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x5346_544e, "ntfs"),
    (0x3153_464a, "jfs"),
    (0x5265_4973, "reiserfs"),
];

/// Names of filesystems we refuse, for the message.
const KNOWN: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6367_7270, "cgroup2"),
    (0x0027_e0eb, "cgroup"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x6969, "nfs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x6573_5546, "fuse"),
    (0x9584_58f6, "hugetlbfs"),
    (0x0000_9660, "iso9660"),
    (0x7375_7245, "coda"),
    (0x0bd0_0bd0, "lustre"),
    (0x0102_1997, "9p"),
    (0x6165_676C, "pstore"),
    (0x6e73_6673, "nsfs"),
    (0x1373, "devfs"),
    (0x6267_6673, "configfs"),
];

/// Ok if writes to regular files of the filesystem with `magic` can be
/// undone.
pub(crate) fn verdict(magic: i64) -> Result<(), FileRefusal> {
    let m = magic & 0xffff_ffff;
    if RESTORABLE.iter().any(|(k, _)| *k == m) {
        return Ok(());
    }
    let fs = KNOWN
        .iter()
        .chain(RESTORABLE)
        .find(|(k, _)| *k == m)
        .map_or_else(|| format!("type {m:#x}"), |(_, n)| n.to_string());
    Err(FileRefusal::Filesystem { fs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_disk_filesystems_pass_and_virtual_ones_are_named() {
        assert!(verdict(0xEF53).is_ok());
        assert!(verdict(0x0102_1994).is_ok());
        // f_type is signed on some ABIs: btrfs' magic has the top bit set.
        assert!(verdict(0x9123_683Eu32 as i32 as i64).is_ok());
        assert_eq!(
            verdict(0x9fa0),
            Err(FileRefusal::Filesystem { fs: "proc".into() })
        );
        assert_eq!(
            verdict(0x1234),
            Err(FileRefusal::Filesystem {
                fs: "type 0x1234".into()
            })
        );
    }
}
