//! Link flags for hail.

fn main() {
    // Relative relocations packed as DT_RELR (glibc 2.36+): about 130 KiB of `.rela.dyn` that every
    // agent would otherwise read at start-up and keep resident shrink to 2 KiB.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // The unwinder linked in from libgcc_eh.a, as `-static-libgcc` does, instead of loading
    // libgcc_s.so at every start: hail only uses it to print a backtrace (panics abort), and one
    // shared library fewer is about 0.1 MiB less resident per agent.
    println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
}
