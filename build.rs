//! Release builds of the binaries place the functions listed in `bins/function-order.txt`
//! (the ones the services run, as `scripts/function-order.sh` recorded them) together at the
//! start of their code. A process's resident set counts the code pages it has run, faulted
//! in 64 KiB at a time; with the running code together, far fewer of them.
//!
//! Only lld (and mold) take a symbol ordering file; GNU ld refuses the option. Rust links
//! x86_64 Linux binaries with its own lld since 1.90, so the file is handed over there and
//! nowhere else, and not when the build chooses another linker. `XENIOS_FUNCTION_ORDER=off`
//! leaves the order to the linker.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "bins/function-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=XENIOS_FUNCTION_ORDER");
    if env::var("PROFILE").as_deref() != Ok("release")
        || env::var("XENIOS_FUNCTION_ORDER").as_deref() == Ok("off")
        || env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || !links_with_rust_lld()
    {
        return;
    }
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&manifest_dir).join(ORDER_FILE);
    if !order.exists() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // The list outlives the code it was taken from: names no longer there are expected.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// Whether rustc links with its bundled lld: 1.90 or later, and no linker chosen in the flags.
fn links_with_rust_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    // "linker" covers -C linker= and -C linker-flavor=, -Z linker-features too.
    if ["linker", "link-self-contained", "fuse-ld"]
        .iter()
        .any(|flag| flags.contains(flag))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(output) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&output.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    matches!(minor, Some(m) if m >= 90)
}
