//! Builds what goes into the guest: the fault module (against the pinned
//! kernel's headers), the static `labtool` helper, the `selfheal` binary,
//! and the initramfs holding them. Builds are cached by a hash of their
//! inputs and re-verified when reused.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::CpioWriter;
use crate::setup::{
    io_err, run_capture, sha256_file, sha256_hex, CommandFailed, KernelTree, SetupError,
};

/// A build step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Setup-level failure (I/O, spawn).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The kernel module did not build.
    #[error("building the fault module {src} against {headers} failed: {source}")]
    Module {
        /// Source directory.
        src: PathBuf,
        /// Headers tree.
        headers: PathBuf,
        /// How make failed.
        source: CommandFailed,
    },
    /// The built module is not for the guest kernel.
    #[error("{path} has no vermagic for {release}; delete {dir} and retry", dir = path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    Vermagic {
        /// The .ko.
        path: PathBuf,
        /// Expected release.
        release: String,
    },
    /// labtool did not build.
    #[error("building the static guest helper {src} with gcc failed: {source}. libc6-dev provides the static libc")]
    Labtool {
        /// The C source.
        src: PathBuf,
        /// How gcc failed.
        source: CommandFailed,
    },
    /// selfheal did not build or cannot be found.
    #[error("the selfheal binary: {0}")]
    Selfheal(String),
}

/// Paths of the repository's lab assets.
#[derive(Debug, Clone)]
pub struct Assets {
    /// Workspace root.
    pub workspace: PathBuf,
    /// lab/module.
    pub module_src: PathBuf,
    /// lab/guest.
    pub guest_dir: PathBuf,
}

impl Assets {
    /// Locates the assets: `$SELFHEAL_LAB_ASSETS` (a workspace root) or the
    /// workspace this binary was built from.
    pub fn locate() -> Assets {
        let workspace = std::env::var_os("SELFHEAL_LAB_ASSETS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
        let workspace = workspace.canonicalize().unwrap_or(workspace);
        Assets {
            module_src: workspace.join("lab/module"),
            guest_dir: workspace.join("lab/guest"),
            workspace,
        }
    }
}

fn hash_files(files: &[&Path], extra: &str) -> Result<String, SetupError> {
    let mut all = Vec::new();
    for f in files {
        all.extend(fs::read(f).map_err(io_err("reading", f))?);
    }
    all.extend(extra.as_bytes());
    Ok(sha256_hex(&all)[..16].to_string())
}

/// Builds (or reuses) `lab_fault.ko` for the guest kernel.
pub fn build_module(
    cache: &Path,
    assets: &Assets,
    kernel: &KernelTree,
) -> Result<PathBuf, BuildError> {
    let c = assets.module_src.join("lab_fault.c");
    let mk = assets.module_src.join("Makefile");
    let key = hash_files(&[&c, &mk], &kernel.release)?;
    let dir = cache.join("build").join(format!("module-{key}"));
    let ko = dir.join("lab_fault.ko");
    if ko.is_file() && has_vermagic(&ko, &kernel.release)? {
        return Ok(ko);
    }
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    for f in [&c, &mk] {
        let dst = dir.join(f.file_name().unwrap_or_default());
        fs::copy(f, &dst).map_err(io_err("copying to", &dst))?;
    }
    run_capture(
        Command::new("make")
            .arg("-C")
            .arg(&kernel.headers)
            .arg(format!("M={}", dir.display()))
            .arg("modules"),
    )?
    .map_err(|source| BuildError::Module {
        src: assets.module_src.clone(),
        headers: kernel.headers.clone(),
        source,
    })?;
    if !has_vermagic(&ko, &kernel.release)? {
        return Err(BuildError::Vermagic {
            path: ko,
            release: kernel.release.clone(),
        });
    }
    Ok(ko)
}

fn has_vermagic(ko: &Path, release: &str) -> Result<bool, SetupError> {
    let data = fs::read(ko).map_err(io_err("reading", ko))?;
    let needle = format!("vermagic={release} ");
    Ok(data.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Builds (or reuses) the static `labtool`.
pub fn build_labtool(cache: &Path, assets: &Assets) -> Result<PathBuf, BuildError> {
    let src = assets.guest_dir.join("labtool.c");
    let key = hash_files(&[&src], "gcc -O2 -static")?;
    let dir = cache.join("build");
    let out = dir.join(format!("labtool-{key}"));
    if out.is_file() && !is_dynamic_elf(&out)? {
        return Ok(out);
    }
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    run_capture(
        Command::new("gcc")
            .args(["-O2", "-static", "-Wall", "-o"])
            .arg(&out)
            .arg(&src),
    )?
    .map_err(|source| BuildError::Labtool {
        src: src.clone(),
        source,
    })?;
    Ok(out)
}

/// True when an ELF file asks for a dynamic loader (has PT_INTERP).
pub fn is_dynamic_elf(path: &Path) -> Result<bool, SetupError> {
    let data = fs::read(path).map_err(io_err("reading", path))?;
    Ok(elf_has_interp(&data))
}

fn elf_has_interp(d: &[u8]) -> bool {
    // 64-bit little-endian only: the guest is x86_64.
    if d.len() < 64 || &d[..4] != b"\x7fELF" || d[4] != 2 || d[5] != 1 {
        return false;
    }
    let u64_at = |o: usize| {
        d.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let u16_at = |o: usize| d.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    (0..phnum as usize).any(|i| {
        let o = phoff as usize + i * phentsize as usize;
        d.get(o..o + 4) == Some(&3u32.to_le_bytes()[..]) // PT_INTERP
    })
}

/// Where the guest's selfheal comes from.
#[derive(Debug, Clone)]
pub enum SelfhealSource {
    /// A binary given on the command line.
    Path(PathBuf),
    /// Build `selfheal-cli` from the workspace, statically linked.
    Workspace,
    /// The plumbing placeholder (detects nothing; reports say so).
    Placeholder,
}

/// Builds or locates the selfheal binary for the guest.
pub fn selfheal_binary(
    assets: &Assets,
    src: &SelfhealSource,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf, BuildError> {
    match src {
        SelfhealSource::Path(p) if p.is_file() => Ok(p.clone()),
        SelfhealSource::Path(p) => Err(BuildError::Selfheal(format!(
            "{} does not exist",
            p.display()
        ))),
        SelfhealSource::Placeholder => Ok(assets.guest_dir.join("selfheal-placeholder.sh")),
        SelfhealSource::Workspace => {
            if !assets.workspace.join("crates/cli/Cargo.toml").is_file() {
                return Err(BuildError::Selfheal(format!(
                    "{} has no crates/cli (selfheal-cli) yet; pass --selfheal PATH, or --placeholder to test the lab's plumbing only",
                    assets.workspace.display()
                )));
            }
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| assets.workspace.join("target"));
            log("building a static selfheal (cargo build --release -p selfheal-cli)");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            run_capture(
                Command::new(cargo)
                    .args([
                        "build",
                        "--release",
                        "-p",
                        "selfheal-cli",
                        "--target",
                        "x86_64-unknown-linux-gnu",
                    ])
                    .env("RUSTFLAGS", "-C target-feature=+crt-static")
                    .env("CARGO_TARGET_DIR", &target_dir)
                    .current_dir(&assets.workspace),
            )?
            .map_err(|d| BuildError::Selfheal(format!("cargo build failed: {d}")))?;
            let bin = target_dir.join("x86_64-unknown-linux-gnu/release/selfheal");
            if bin.is_file() {
                Ok(bin)
            } else {
                Err(BuildError::Selfheal(format!(
                    "cargo succeeded but {} is missing",
                    bin.display()
                )))
            }
        }
    }
}

/// A copy of `bin` without debug info, cached by content hash: release
/// builds carry line tables that would triple the initramfs.
pub fn stripped_copy(cache: &Path, bin: &Path) -> Result<PathBuf, SetupError> {
    let sum = sha256_file(bin)?;
    let dir = cache.join("build");
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = dir.join(format!("{name}-{}", &sum[..16]));
    if out.is_file() {
        return Ok(out);
    }
    match run_capture(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(bin),
    )? {
        Ok(_) => Ok(out),
        // Not an ELF (the placeholder script) or no strip: use it as is.
        Err(_) => Ok(bin.to_path_buf()),
    }
}

/// What goes into one initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsInputs {
    /// lab/guest/init.
    pub init: PathBuf,
    /// Static busybox.
    pub busybox: PathBuf,
    /// Static labtool.
    pub labtool: PathBuf,
    /// lab_fault.ko.
    pub module: PathBuf,
    /// selfheal (static; a dynamic one gets its libraries copied in).
    pub selfheal: PathBuf,
    /// The selfheal config under test.
    pub config: PathBuf,
    /// The config of the `restart` profile (the config under test with the
    /// controlled restart enabled), when that profile runs.
    pub restart_config: Option<PathBuf>,
    /// The kernel's own modules to load at boot, dependencies first.
    pub kernel_modules: Vec<PathBuf>,
}

/// Writes the initramfs to `out` and returns its SHA256.
pub fn build_initramfs(inputs: &InitramfsInputs, out: &Path) -> Result<String, SetupError> {
    let read = |p: &Path| fs::read(p).map_err(io_err("reading", p));
    let file = fs::File::create(out).map_err(io_err("creating", out))?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    let wr = |r: std::io::Result<()>| r.map_err(io_err("writing", out));
    for d in [
        "/bin", "/sbin", "/lab", "/proc", "/sys", "/dev", "/tmp", "/run", "/var", "/var/lib",
    ] {
        wr(w.dir(d))?;
    }
    wr(w.file("/init", 0o755, &read(&inputs.init)?))?;
    wr(w.file("/bin/busybox", 0o755, &read(&inputs.busybox)?))?;
    wr(w.symlink("/bin/sh", "busybox"))?;
    wr(w.file("/lab/labtool", 0o755, &read(&inputs.labtool)?))?;
    wr(w.file("/lab/lab_fault.ko", 0o644, &read(&inputs.module)?))?;
    wr(w.file("/lab/selfheal", 0o755, &read(&inputs.selfheal)?))?;
    wr(w.file("/lab/config.toml", 0o644, &read(&inputs.config)?))?;
    if let Some(c) = &inputs.restart_config {
        wr(w.file("/lab/config-restart.toml", 0o644, &read(c)?))?;
    }
    if !inputs.kernel_modules.is_empty() {
        wr(w.dir("/lab/modules"))?;
        let mut order = String::new();
        for m in &inputs.kernel_modules {
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            wr(w.file(&format!("/lab/modules/{name}"), 0o644, &read(m)?))?;
            order.push_str(&name);
            order.push('\n');
        }
        wr(w.file("/lab/modules.load", 0o644, order.as_bytes()))?;
    }
    if is_dynamic_elf(&inputs.selfheal)? {
        let mut made = std::collections::BTreeSet::new();
        for lib in shared_libs(&inputs.selfheal)? {
            let parent = Path::new(&lib)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut acc = String::new();
            for part in parent.split('/').filter(|s| !s.is_empty()) {
                acc = format!("{acc}/{part}");
                if made.insert(acc.clone())
                    && !matches!(
                        acc.as_str(),
                        "/bin" | "/sbin" | "/lab" | "/var" | "/var/lib"
                    )
                {
                    wr(w.dir(&acc))?;
                }
            }
            wr(w.file(&lib, 0o755, &read(Path::new(&lib))?))?;
        }
    }
    let buf = w.finish().map_err(io_err("writing", out))?;
    drop(buf);
    sha256_file(out)
}

/// Libraries a dynamic binary needs, as absolute paths, from `ldd`.
fn shared_libs(bin: &Path) -> Result<Vec<String>, SetupError> {
    let out = run_capture(Command::new("ldd").arg(bin))?.unwrap_or_default();
    Ok(out
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(str::to_string)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_elves_are_told_apart() {
        // The test binary itself is dynamic; a non-ELF is not.
        let me = std::env::current_exe().unwrap();
        let dynamic = is_dynamic_elf(&me).unwrap();
        let interp_expected = !cfg!(target_feature = "crt-static");
        assert_eq!(dynamic, interp_expected);
        assert!(!elf_has_interp(b"#!/bin/sh\n"));
    }
}
