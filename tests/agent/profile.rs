//! A profile hail cannot read (it points outside the Nix store) does not stop hail: the next
//! deployment replaces it.

use crate::fixture::{Fixture, RUN, activated};

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_profile_pointing_outside_the_store_is_replaced() {
    let f = Fixture::new();
    let (p, _) = f.release("1");
    let profile = &f.hail.profile;
    std::fs::create_dir_all(profile.parent().unwrap()).unwrap();
    let elsewhere = f.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, profile).unwrap();

    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert!(r.output.contains("not a store path"), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));
    assert_eq!(f.activations(), [activated("1", &p)]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_failed_first_deployment_leaves_no_profile() {
    let f = Fixture::new();
    f.release_spec(&f.spec("1").exit_code(1));
    for attempt in 1..=2 {
        let r = f.hail.oneshot(&[], RUN);
        assert_eq!(r.code(), Some(7), "attempt {attempt}: {}", r.output);
        assert!(
            std::fs::symlink_metadata(&f.hail.profile)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
            "attempt {attempt}: the profile stayed at the failed build: {}",
            r.output
        );
        assert!(f.generations().is_empty(), "{:?}", f.generations());
    }
}
