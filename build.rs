//! Release links of the `hermes` executable, laid out so that an idle
//! gateway keeps as little of it in memory as it can.
//!
//! - `layout/hot-symbols.txt` lists the functions a gateway runs as it
//!   starts, idles and serves requests (recorded by `layout/record.py`).
//!   lld, rustc's linker on x86_64 Linux, places them first and in that
//!   order, so they share a few pages instead of touching most of the code.
//!   Names the file lists that no longer exist are skipped without a
//!   warning, so a stale file costs only the pages it would have saved.
//! - Relative relocations are packed (`DT_RELR`): the loader reads a table of
//!   a few KiB instead of 600 KiB at every start. The loader must know the
//!   format (glibc 2.36 or later), so this is done only when the build
//!   machine's glibc does, as the binary is built where it runs.
//!
//! Only release links of the service binary change: the tests do not care
//! where code sits. BENCHMARKS.md, Round 6, has the figures.

use std::process::Command;

/// The symbol ordering file, relative to the package.
const ORDER: &str = "layout/hot-symbols.txt";

/// The first glibc whose loader reads packed relative relocations.
const RELR_GLIBC: (u32, u32) = (2, 36);

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=build.rs");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    // The options are lld's; other targets link with other linkers.
    if env("PROFILE") != "release" || env("TARGET") != "x86_64-unknown-linux-gnu" {
        return;
    }
    let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER);
    if order.is_file() {
        let order = order.display();
        println!("cargo:rustc-link-arg-bin=hermes=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bin=hermes=-Wl,--no-warn-symbol-ordering");
    }
    if env("HOST") == env("TARGET") && host_glibc().is_some_and(|v| v >= RELR_GLIBC) {
        println!("cargo:rustc-link-arg-bin=hermes=-Wl,-z,pack-relative-relocs");
    }
}

/// The build machine's glibc version, from `getconf GNU_LIBC_VERSION`
/// ("glibc 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = minor.split('.').next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
