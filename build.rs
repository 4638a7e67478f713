//! Link flags for the `hail` binary.

fn main() {
    // Relative relocations packed as DT_RELR (glibc 2.36+): about 130 KiB of `.rela.dyn` that every
    // agent would otherwise read at start-up and keep resident shrink to 2 KiB.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
