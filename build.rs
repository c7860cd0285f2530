//! Release links of the `hermes` executable, laid out so that an idle
//! gateway keeps as little of it in memory as it can.
//!
//! - `layout/hot-symbols.txt` lists the functions a gateway runs as it
//!   starts, idles and serves requests (recorded by `layout/record.py`).
//!   lld places them first and in that order, so they share a few pages
//!   instead of touching most of the code. Names the file lists that no
//!   longer exist are skipped without a warning, so a stale file costs only
//!   the pages it would have saved.
//! - Relative relocations are packed (`DT_RELR`): the loader reads a table of
//!   a few KiB instead of 600 KiB at every start. The loader must know the
//!   format (glibc 2.36 or later), so this is done only when the build
//!   machine's glibc does, as the binary is built where it runs.
//!
//! Both are lld options. rustc links with lld on x86_64 Linux since 1.90,
//! unless a linker is chosen in the cargo configuration or `RUSTFLAGS`; then
//! the binary is linked as it was. Only release links of the service binary
//! change: the tests do not care where code sits. BENCHMARKS.md, Round 6,
//! has the figures.

use std::process::Command;

/// The symbol ordering file, relative to the package.
const ORDER: &str = "layout/hot-symbols.txt";

/// The first rustc that links with lld on this target by default.
const LLD_RUSTC: (u32, u32) = (1, 90);

/// The first glibc whose loader reads packed relative relocations.
const RELR_GLIBC: (u32, u32) = (2, 36);

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    let default_linker =
        env("RUSTC_LINKER").is_empty() && !flags.contains("linker") && !flags.contains("fuse-ld");
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || !default_linker
        || rustc_version(&env("RUSTC")).is_none_or(|v| v < LLD_RUSTC)
    {
        return;
    }
    let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER);
    if order.is_file() {
        // `-Xlinker` passes the path whole; `-Wl,` would split it at commas.
        link_arg("-Xlinker");
        link_arg(&format!("--symbol-ordering-file={}", order.display()));
        link_arg("-Wl,--no-warn-symbol-ordering");
    }
    if env("HOST") == env("TARGET") && host_glibc().is_some_and(|v| v >= RELR_GLIBC) {
        link_arg("-Wl,-z,pack-relative-relocs");
    }
}

fn link_arg(arg: &str) {
    println!("cargo:rustc-link-arg-bin=hermes={arg}");
}

/// The compiler's version, from `rustc --version` ("rustc 1.95.0 (…)").
fn rustc_version(rustc: &str) -> Option<(u32, u32)> {
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    major_minor(version)
}

/// The build machine's glibc version, from `getconf GNU_LIBC_VERSION`
/// ("glibc 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    major_minor(text.trim().strip_prefix("glibc ")?)
}

/// `(2, 36)` from "2.36" or "2.36.1".
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.split('-').next()?.parse().ok()?;
    Some((major, minor))
}
