// The prerequisites of the tests, in groups, and how each is probed: the one list, read both by
// `hail_testkit::prereq` (at run time: a test missing one fails) and by the build scripts of hail
// and of the test kit (at build time: with `HAIL_TEST_SKIP_MISSING=1`, never with `CI=true`, a group
// with something missing becomes the cfg `hail_skip_<name>`, which marks its tests ignored). Both
// `include!` this file, so it holds only items, and only std: a build script has no dependencies.

/// One thing a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Running as uid 0.
    Root,
    /// A command on `PATH`.
    Command(&'static str),
    /// A file at this absolute path.
    File(&'static str),
    /// A file under one of `/usr/lib`'s directories (the multiarch one, `/usr/lib/<triple>/…`).
    Library(&'static str),
    /// A module that Debian's Python (`/usr/bin/python3`, whatever `PATH` finds first) imports.
    PythonModule(&'static str),
}

/// What a set of tests needs; a test needing it is marked
/// `#[cfg_attr(hail_skip_<name>, ignore = "…")]`.
#[derive(Debug)]
pub struct Group {
    pub name: &'static str,
    pub needs: &'static [Need],
}

/// Real Nix (Debian's nix-bin) as root.
pub const NIX: Group = Group {
    name: "nix",
    needs: &[
        Need::Root,
        Need::Command("nix"),
        Need::Command("nix-build"),
        Need::Command("nix-instantiate"),
        Need::Command("nix-store"),
        Need::Command("nix-env"),
        Need::Command("nix-daemon"),
    ],
};

/// A booted systemd container (`crate::container`); system tests also need [`NIX`].
pub const CONTAINER: Group = Group {
    name: "container",
    needs: &[
        Need::Root,
        Need::Command("debootstrap"),
        Need::Command("systemd-nspawn"),
        Need::Command("nsenter"),
    ],
};

/// Mounts and namespaces of the test's own (util-linux and mount).
pub const NAMESPACES: Group = Group {
    name: "namespaces",
    needs: &[
        Need::Root,
        Need::Command("mount"),
        Need::Command("umount"),
        Need::Command("unshare"),
        Need::Command("nsenter"),
    ],
};

/// The Prometheus text-format parser (Debian's python3-prometheus-client).
pub const PROMETHEUS_PARSER: Group = Group {
    name: "prometheus_parser",
    needs: &[Need::PythonModule("prometheus_client.parser")],
};

/// Prometheus' `promtool` (Debian's prometheus).
pub const PROMTOOL: Group = Group {
    name: "promtool",
    needs: &[Need::Command("promtool")],
};

/// libfaketime, which sets a process's clock (Debian's faketime).
pub const FAKETIME: Group = Group {
    name: "faketime",
    needs: &[
        Need::Command("faketime"),
        Need::Library("faketime/libfaketime.so.1"),
    ],
};

/// mdbook, which builds the book.
pub const MDBOOK: Group = Group {
    name: "mdbook",
    needs: &[Need::Command("mdbook")],
};

/// Python, which runs the scripts under `scripts/`.
pub const PYTHON: Group = Group {
    name: "python3",
    needs: &[Need::Command("python3")],
};

/// Graphviz' `dot` and Python, which render the diagrams.
pub const DOT: Group = Group {
    name: "dot",
    needs: &[Need::Command("python3"), Need::Command("dot")],
};

/// `man`, which renders the manual page.
pub const MAN: Group = Group {
    name: "man",
    needs: &[Need::Command("man")],
};

/// bash with Debian's bash-completion.
pub const BASH_COMPLETION: Group = Group {
    name: "bash_completion",
    needs: &[
        Need::Command("bash"),
        Need::File("/usr/share/bash-completion/bash_completion"),
    ],
};

/// Every group.
pub const GROUPS: &[Group] = &[
    NIX,
    CONTAINER,
    NAMESPACES,
    PROMETHEUS_PARSER,
    PROMTOOL,
    FAKETIME,
    MDBOOK,
    PYTHON,
    DOT,
    MAN,
    BASH_COMPLETION,
];

/// Whether `need` is there.
pub fn present(need: &Need) -> bool {
    match *need {
        // The effective uid, the second of `Uid:` in /proc/self/status (std has no geteuid).
        Need::Root => std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                == Some("0")
        }),
        Need::Command(command) => on_path(command),
        Need::File(path) => std::path::Path::new(path).is_file(),
        Need::Library(name) => library(name).is_some(),
        Need::PythonModule(module) => std::process::Command::new("/usr/bin/python3")
            .args(["-c", &format!("import {module}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

/// Where `name` is under one of `/usr/lib`'s directories (`/usr/lib/<triple>/<name>`).
pub fn library(name: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|d| d.ok())
        .map(|d| d.path().join(name))
        .find(|p| p.is_file())
}

/// Whether `command` is an executable file in one of `PATH`'s directories.
pub fn on_path(command: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| {
        d.join(command)
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The build scripts' part: declares every `hail_skip_<name>` and, when skipping is asked for
/// (`HAIL_TEST_SKIP_MISSING=1`) and this is not CI (`CI=true`), sets those whose group misses
/// something.
#[allow(dead_code)] // the test kit's library includes this file too, and never calls this
fn skip_missing_prerequisites() {
    println!("cargo:rerun-if-env-changed=HAIL_TEST_SKIP_MISSING");
    println!("cargo:rerun-if-env-changed=CI");
    for group in GROUPS {
        println!("cargo:rustc-check-cfg=cfg(hail_skip_{})", group.name);
    }
    let var = |name| std::env::var(name).unwrap_or_default();
    if var("HAIL_TEST_SKIP_MISSING") != "1" || var("CI") == "true" {
        return;
    }
    // Only while skipping, so that an ordinary build does not start again with every other PATH;
    // a command installed later reruns the probe too (a file or library outside PATH does not).
    println!("cargo:rerun-if-env-changed=PATH");
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path).filter(|d| d.is_absolute() && d.is_dir()) {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
    }
    for group in GROUPS {
        if !group.needs.iter().all(present) {
            println!("cargo:rustc-cfg=hail_skip_{}", group.name);
        }
    }
}
