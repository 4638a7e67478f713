//! Prerequisites of a test (root, commands on `PATH`, a few files), in the groups of
//! `testkit/prerequisites.rs`.
//!
//! A test calls [`require`] with its group before anything else; when something is missing, it
//! panics, naming what: a test never passes without having run. Skipping is decided at build time
//! instead: with `HAIL_TEST_SKIP_MISSING=1` (and never with `CI=true`) the build scripts of hail and
//! of the test kit probe every group and set the cfg `hail_skip_<name>` for each with something
//! missing, and each test carries the attribute that makes it ignored then, which every test runner
//! shows as skipped:
//!
//! ```no_run
//! use hail_testkit::prereq::{self, PROMTOOL};
//!
//! #[test]
//! #[cfg_attr(hail_skip_promtool, ignore = "needs promtool (HAIL_TEST_SKIP_MISSING=1)")]
//! fn the_rules_pass_promtool() {
//!     prereq::require(&PROMTOOL);
//!     // …
//! }
//! ```

include!("../prerequisites.rs");

/// Panics naming whatever of `group` is missing; returns only when everything is there.
pub fn require(group: &Group) {
    let missing: Vec<String> = group
        .needs
        .iter()
        .filter(|n| !present(n))
        .map(|n| match n {
            Need::Root => "root privileges".to_string(),
            Need::Command(c) => format!("`{c}` on PATH"),
            Need::File(f) => f.to_string(),
            Need::Library(l) => format!("/usr/lib/*/{l}"),
            Need::PythonModule(m) => format!("/usr/bin/python3's module `{m}`"),
        })
        .collect();
    if !missing.is_empty() {
        missing_one(&missing.join(", "));
    }
}

/// Panics: `what` is missing. (A test whose prerequisites are missing is only skipped when it was
/// built so, see the module documentation; one that runs without them fails.)
pub fn missing_one(what: &str) -> ! {
    let test = std::thread::current().name().unwrap_or("test").to_string();
    panic!(
        "prerequisite missing: {test}: missing {what} (scripts/prerequisites test installs them; \
         outside CI, HAIL_TEST_SKIP_MISSING=1 builds such tests as ignored, shown as skipped)"
    );
}

/// As [`require`] with [`NIX`].
pub fn require_nix() {
    require(&NIX)
}
