//! Link flags for hail, and its tests whose prerequisites are missing marked as ignored when
//! asked to (see `testkit/prerequisites.rs`).

include!("testkit/prerequisites.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=testkit/prerequisites.rs");
    skip_missing_prerequisites();
    // Relative relocations packed as DT_RELR (glibc 2.36+): about 130 KiB of `.rela.dyn` that every
    // agent would otherwise read at start-up and keep resident shrink to 2 KiB.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // The unwinder linked in from libgcc_eh.a, as `-static-libgcc` does, instead of loading
    // libgcc_s.so at every start: hail only uses it to print a backtrace (panics abort), and one
    // shared library fewer is about 0.1 MiB less resident per agent. (glibc targets only: musl's
    // std brings its own unwinder.)
    let var = |name| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
}
