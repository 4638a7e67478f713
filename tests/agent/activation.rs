//! The activation's output reaches hail's log whatever it holds (invalid UTF-8, very long lines),
//! and a process the activation leaves running in the background can keep writing: hail never
//! closes the pipes under it.

use std::time::Duration;

use crate::fixture::{Fixture, RUN, wait_until};

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn odd_output_and_a_background_writer_do_not_fail_the_activation() {
    let f = Fixture::new();
    let alive = f.tmp.path().join("background-still-alive");
    let extra = format!(
        "printf 'before \\377\\376 bad bytes\\n'\n\
         head -c 100000 /dev/zero | tr '\\0' a; echo\n\
         i=0; while [ $i -lt 50 ]; do echo line-$i; i=$((i+1)); done\n\
         ( sleep 1; echo late-output; echo alive > '{}' ) &",
        alive.display()
    );
    let (p, _) = f.release_spec(&f.spec("1").extra(&extra));

    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    assert!(
        running.wait_for_output("deployed build", RUN),
        "{}",
        running.output()
    );
    let out = running.output();
    assert!(out.contains("before"), "{out}");
    assert!(out.contains("bad bytes"), "{out}");
    assert!(out.contains("line-49"), "{out}");
    assert!(!out.contains("switched back"), "{out}");
    assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));
    // Written after its first write following the activation's end: no SIGPIPE.
    assert!(
        wait_until(RUN, || alive.exists()),
        "the background process died: {}",
        running.output()
    );
    running.terminate(Duration::from_secs(30));
}
